"""`config show` and `config validate`."""

from __future__ import annotations

from pathlib import Path

import click

from utils.render import emit, table


@click.group("config")
def config_group() -> None:
    """Show or check settings.

    \b
    Examples:
      python main.py config show
      python main.py config validate config/development.yaml
    """


@config_group.command("show")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def show(app, fmt: str) -> None:
    """Print the effective settings (secrets masked) with their descriptions.

    \b
    Examples:
      python main.py config show
      python main.py config show --format json
    """
    from config.settings import describe_settings

    rows = describe_settings(app.settings)
    data = {r["setting"]: r["value"] for r in rows} if fmt == "json" else rows
    emit(data, fmt, table(rows, title="Effective settings"))


@config_group.command("validate")
@click.argument("file", type=click.Path(path_type=Path))
def validate(file: Path) -> None:
    """Check a YAML settings FILE: unknown keys and bad values are named with the file.

    \b
    Examples:
      python main.py config validate config/development.yaml
    """
    from config.settings import exposure_warning, read_config_file

    data = read_config_file(file)  # validated as a layer: unknown keys and bad values are named
    warning = exposure_warning(file, data)
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    click.echo(f"{file}: OK")


COMMANDS = (config_group,)
