"""Retail Data Platform command line: `python main.py --help`."""

from __future__ import annotations

import atexit
import importlib
import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from cli_context import AppContext
from utils.errors import PlatformError
from utils.urls import mask_secrets


class PlatformGroup(click.Group):
    """Turns platform errors into `Error: ...` and exit code 1 (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PlatformError as exc:
            if isinstance(ctx.obj, AppContext) and ctx.obj.debug:
                raise
            raise click.ClickException(mask_secrets(str(exc))) from None
        except Exception as exc:  # a database error a command did not describe itself (warehouse unreachable…)
            if not _is_database_error(exc) or not isinstance(ctx.obj, AppContext) or ctx.obj.debug or ctx.obj._engine is None:
                raise
            from database.errors import describe

            raise click.ClickException(mask_secrets(str(describe(ctx.obj._engine, exc)))) from None
        finally:
            if isinstance(ctx.obj, AppContext):
                ctx.obj.close()


def _is_database_error(exc: Exception) -> bool:
    """A SQLAlchemy error, without importing SQLAlchemy: a command that never loaded it raised none."""
    errors = sys.modules.get("sqlalchemy.exc")
    return errors is not None and isinstance(exc, errors.SQLAlchemyError)


@click.group(cls=PlatformGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    help="Extra YAML settings file (after config/development.yaml and config/local.yaml).",
)
@click.option(
    "--database-url", help="Warehouse URL, e.g. sqlite:///data/warehouse.db or postgresql://user@host/db (overrides RDP_DATABASE_URL)."
)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), help="Console log level.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option("0.1.0", prog_name="retail-data-platform")
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None, database_url: str | None, log_level: str | None, debug: bool) -> None:
    """Retail Data Platform: raw sales extracts to a star-schema warehouse, every row accounted for."""
    overrides: dict = {}
    if database_url:
        overrides.setdefault("database", {})["url"] = database_url
    if log_level:
        overrides.setdefault("logging", {})["level"] = log_level.upper()
    if debug:
        overrides.setdefault("logging", {})["level"] = "DEBUG"
    app = AppContext(config_file=config_file, overrides=overrides, debug=debug)
    ctx.obj = app
    ctx.call_on_close(app.close)
    if ctx.invoked_subcommand and not ctx.resilient_parsing and "--help" not in sys.argv and "-h" not in sys.argv:
        _configure_logging(app)


def _configure_logging(app: AppContext) -> None:
    from utils.logsetup import configure_logging

    try:
        settings = app.settings
    except PlatformError:
        return  # reported by the command that needs the settings
    log_file = settings.resolve_path(settings.logging.file) if settings.logging.file else None
    configure_logging(settings.logging.level, log_file)


COMMAND_PACKAGES = ("config", "database", "etl", "monitoring", "performance", "scheduling", "metadata", "reports", "sampledata")


def _register() -> None:
    """Add the commands each package lists in `<package>/commands.py` as COMMANDS."""
    for package in COMMAND_PACKAGES:
        try:
            module = importlib.import_module(f"{package}.commands")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.commands":
                raise
            continue
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def run_and_exit() -> NoReturn:
    """Run the command line, then end the process without the interpreter's teardown.

    Everything registered to run at exit still runs (log handlers, thread pools, temporary
    folders) and the standard streams are flushed; what is skipped is freeing every module and
    object one by one, work nobody waits for once the answer is printed. Commands close their
    warehouse connections and caches themselves (AppContext.close and the caches' own close)."""
    try:
        cli.main()
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc.code)
    if sys.getprofile() or sys.gettrace():  # under `python -m cProfile` or a debugger: they write their results after we return
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`| head`), or a closed stream
            status = status or 120  # what the interpreter itself returns when its final flush fails
    os._exit(status)


def _exit_status(code: object) -> int:
    """The status `sys.exit(code)` gives, printing a message code as the interpreter would."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    run_and_exit()
