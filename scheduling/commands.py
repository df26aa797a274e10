"""`schedule daily|every|weekly|list|remove|enable|disable|run|history|start|stop|status`."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import click

from etl.commands import run_options, run_request_of
from etl.request import RUN_OPTIONS, flag_of
from scheduling import definitions as spec
from scheduling.definitions import JobDef
from scheduling.pidfile import running_pid, signal_daemon, stop_daemon
from utils.errors import PlatformError
from utils.lazy import lazy_module
from utils.render import emit, table
from utils.urls import mask_url

# SQLAlchemy and the models load when a command first touches them, not for help screens.
jobs = lazy_module("scheduling.jobs")
schema = lazy_module("database.schema")
history = lazy_module("scheduling.history")

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)


def _validated(parse: Callable[[str], str]) -> Callable:
    def callback(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None

    return callback


def _job_options(func: Callable) -> Callable:
    options = [
        click.option("--name", required=True, callback=_validated(spec.check_name), help="unique job name (letters, digits, _ . -)"),
        click.option(
            "--source",
            help="etl jobs: what etl --source takes: a file (it may arrive later), a folder of CSV files, a glob such as "
            "'incoming/*.xlsx', a database URL or an http(s) URL",
        ),
        click.option("--kind", type=click.Choice(spec.KINDS), help="what to run (default: etl when --source is given)"),
        click.option("--archive-dir", type=click.Path(file_okay=False), help="folder jobs: move each loaded file here"),
        click.option("--disabled", is_flag=True, help="define the job without running it yet (schedule enable NAME)"),
        click.option("--replace", is_flag=True, help="replace an existing job of the same name"),
        run_options,
        _FORMAT,
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group("schedule")
def schedule_group() -> None:
    """Scheduled jobs kept in the warehouse, and the daemon that runs them.

    \b
    Examples:
      python main.py schedule list
      python main.py schedule start
    """


def _add(
    app, fmt: str, name: str, source: str | None, kind: str | None, archive_dir: str | None, disabled: bool, replace: bool, **options
) -> None:
    run = {k: options.pop(k) for k in RUN_OPTIONS}
    kind = kind or ("etl" if source else None)
    if kind is None:
        raise click.UsageError("give --source PATH_OR_GLOB for a load job, or --kind quality|alerts|docs")
    if kind == "etl" and not source:
        raise click.UsageError("an etl job needs --source (a file, a folder or a glob)")
    given = [flag_of(name) for name in RUN_OPTIONS if run[name]]
    if kind != "etl" and (source or archive_dir or given):
        shown = ", ".join(["--source and --archive-dir", *given])
        raise click.UsageError(f"{shown} apply to etl jobs only, not to --kind {kind}")
    request = None
    if kind == "etl":
        request = run_request_of(spec.absolute_source(source), name, run)
        request.validate(app.settings)  # refused now, with etl's message, rather than at 02:00
    job = JobDef(
        name=name, kind=kind, source=request.source if request else None,
        run_request=spec.stored_request(request) if request else None,
        archive_dir=str(Path(archive_dir).expanduser().resolve()) if archive_dir else None, enabled=not disabled, **options,
    )  # fmt: skip
    schema.ensure_schema(app.engine, app.settings.warehouse)
    replaced = jobs.add_job(app.engine, job, replace)
    _notify(app)
    _show_job(app, name, fmt, "replaced" if replaced else "added")


def _show_job(app, name: str, fmt: str, verb: str) -> None:
    row = _job_row(jobs.get_job(app.engine, name))
    if fmt == "json":
        emit(row, fmt)
        return
    state = f"next run {row['next_run_local']:%Y-%m-%d %H:%M:%S} (local)" if row["next_run_local"] else "disabled"
    click.echo(f"Job '{name}' {verb}: {row['schedule']}, {row['what']}; {state}.")


def _notify(app) -> None:
    """Tell a daemon running on this machine to reload now (others notice within seconds)."""
    signal_daemon(_pid_path(app), signal.SIGHUP)


def _pid_path(app) -> Path:
    return app.settings.resolve_path(app.settings.scheduler.pid_file)


@schedule_group.command("daily")
@click.option("--time", "at_time", required=True, callback=_validated(spec.parse_time), help="local time HH:MM (24-hour)")
@_job_options
@click.pass_obj
def schedule_daily(app, at_time: str, **options) -> None:
    """Run a job every day at --time. An etl job takes every option of etl, checked now.

    \b
    Examples:
      python main.py schedule daily --name nightly --time 02:00 --source /srv/drop/ --archive-dir /srv/drop/loaded
      python main.py schedule daily --name shop-workbook --time 06:00 --source exports/sales.xlsx --sheet "Year 2010-2011"
      python main.py schedule daily --name shop-db --time 03:00 --source postgresql://etl@shop/db --query "SELECT * FROM sales"
    """
    _add(app, schedule_type="daily", at_time=at_time, **options)


@schedule_group.command("weekly")
@click.option("--day", required=True, callback=_validated(spec.parse_day), help="mon, tue, wed, thu, fri, sat or sun")
@click.option("--time", "at_time", required=True, callback=_validated(spec.parse_time), help="local time HH:MM (24-hour)")
@_job_options
@click.pass_obj
def schedule_weekly(app, day: str, at_time: str, **options) -> None:
    """Run a job once a week on --day at --time. An etl job takes every option of etl, checked now.

    \b
    Examples:
      python main.py schedule weekly --name weekly-quality --day mon --time 06:00 --kind quality
      python main.py schedule weekly --name weekly-load --day sun --time 01:30 --source /srv/weekly/sales.csv.gz
    """
    _add(app, schedule_type="weekly", weekday=day, at_time=at_time, **options)


@schedule_group.command("every")
@click.option("--minutes", type=click.IntRange(1, 7 * 24 * 60), help="minutes between runs")
@click.option("--seconds", type=click.IntRange(1, 7 * 24 * 3600), help="seconds between runs")
@_job_options
@click.pass_obj
def schedule_every(app, minutes: int | None, seconds: int | None, **options) -> None:
    """Run a job again N minutes (or seconds) after the previous run ended. An etl job takes every option of etl.

    \b
    Examples:
      python main.py schedule every --name drop --minutes 15 --source 'incoming/*.csv' --archive-dir incoming/done
      python main.py schedule every --name alerts --minutes 5 --kind alerts
    """
    if (minutes is None) == (seconds is None):
        raise click.UsageError("give exactly one of --minutes N or --seconds N")
    _add(app, schedule_type="every", interval_s=seconds or minutes * 60, **options)


def _job_row(row) -> dict:
    job = jobs.definition_of(row)
    data = dict(row._mapping)
    request = job.request() if job.kind == "etl" else None
    return data | {
        "run_request": request.to_dict() if request else None,
        "options": " ".join(request.options()) if request else "",
        "schedule": job.describe(),
        "what": job.what(),
        "next_run_local": jobs.to_local(row.next_run_at),
        "last_run_local": jobs.to_local(row.last_run_at),
    }


@schedule_group.command("list")
@_FORMAT
@click.pass_obj
def schedule_list(app, fmt: str) -> None:
    """List the jobs with their schedule, next and last run.

    \b
    Examples:
      python main.py schedule list
      python main.py schedule list --format json
    """
    rows = [_job_row(r) for r in jobs.list_jobs(app.engine)] if jobs.tables_exist(app.engine) else []
    shown = [
        {"name": r["name"], "runs": r["kind"] if r["kind"] != "etl" else f"etl {r['source']}", "options": r["options"],
         "schedule": r["schedule"], "enabled": "yes" if r["enabled"] else "no",
         "next run (local)": r["next_run_local"], "last run (local)": r["last_run_local"], "last status": r["last_status"]}
        for r in rows
    ]  # fmt: skip
    emit(rows, fmt, table(shown, title="Scheduled jobs") if shown else "No scheduled jobs; add one with python main.py schedule daily …")


@schedule_group.command("remove")
@click.argument("name")
@click.pass_obj
def schedule_remove(app, name: str) -> None:
    """Remove a job (its history stays).

    \b
    Examples:
      python main.py schedule remove nightly
    """
    schema.ensure_schema(app.engine, app.settings.warehouse)
    jobs.remove_job(app.engine, name)
    _notify(app)
    click.echo(f"Job '{name}' removed.")


@schedule_group.command("enable")
@click.argument("name")
@click.pass_obj
def schedule_enable(app, name: str) -> None:
    """Enable a job; its next run counts from now.

    \b
    Examples:
      python main.py schedule enable nightly
    """
    schema.ensure_schema(app.engine, app.settings.warehouse)
    jobs.set_enabled(app.engine, name, True)
    _notify(app)
    _show_job(app, name, "table", "enabled")


@schedule_group.command("disable")
@click.argument("name")
@click.pass_obj
def schedule_disable(app, name: str) -> None:
    """Disable a job (kept, not run by the daemon; schedule run NAME still runs it).

    \b
    Examples:
      python main.py schedule disable nightly
    """
    schema.ensure_schema(app.engine, app.settings.warehouse)
    jobs.set_enabled(app.engine, name, False)
    _notify(app)
    click.echo(f"Job '{name}' disabled.")


@schedule_group.command("run")
@click.argument("name")
@_FORMAT
@click.pass_obj
def schedule_run(app, name: str, fmt: str) -> None:
    """Run a job now, in the foreground (with retries; skipped if it is running elsewhere).

    \b
    Examples:
      python main.py schedule run nightly
    """
    from scheduling.runner import JobRunner

    schema.ensure_schema(app.engine, app.settings.warehouse)
    job = jobs.get_definition(app.engine, name)
    report = JobRunner(app.engine, app.settings).run(job, "manual")
    rows = [{"": k.replace("_", " "), "value": ", ".join(map(str, v)) if isinstance(v, list) else v} for k, v in report.as_dict().items()]
    emit(report.as_dict(), fmt, table(rows, title=f"Job '{name}'", columns=["", "value"]))
    if report.status == "failed":
        raise PlatformError(f"job '{name}' failed: {report.message}")


@schedule_group.command("history")
@click.option("--name", help="only this job")
@click.option("--status", type=click.Choice(spec.RUN_STATUSES), help="only runs with this status")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@_FORMAT
@click.pass_obj
def schedule_history(app, name: str | None, status: str | None, limit: int, fmt: str) -> None:
    """The jobs' runs, newest first: status, attempt, ETL runs, files loaded, message.

    \b
    Examples:
      python main.py schedule history --limit 20
      python main.py schedule history --name nightly --status failed
    """
    rows = history.list_runs(app.engine, name, limit, status) if jobs.tables_exist(app.engine) else []
    shown = [
        {"id": r["job_run_id"], "job": r["job_name"], "trigger": r["trigger"], "status": r["status"], "try": r["attempt"],
         "started (UTC)": r["started_at"], "seconds": _seconds(r), "files": r["files_loaded"], "etl runs": r["etl_run_ids"], "message": _short(r["message"])}
        for r in rows
    ]  # fmt: skip
    emit(rows, fmt, table(shown, title="Job history") if shown else "No job runs yet.")


def _short(text: str | None, width: int = 160) -> str | None:
    return text if text is None or len(text) <= width else text[: width - 1] + "…"


def _seconds(row: dict) -> str:
    if row["finished_at"] is None:
        return ""
    return f"{(row['finished_at'] - row['started_at']).total_seconds():.0f}"


@schedule_group.command("start")
@click.pass_obj
def schedule_start(app) -> None:
    """Run the scheduler daemon in the foreground until SIGTERM / Ctrl-C (finishes the job in progress).

    \b
    Examples:
      python main.py schedule start
      nohup python main.py schedule start > scheduler.out 2>&1 &
    """
    from scheduling.daemon import Daemon

    path = _pid_path(app)

    def started() -> None:
        click.echo(f"Scheduler started (pid {os.getpid()}, pid file {path}); stop it with: python main.py schedule stop", err=True)

    try:
        Daemon(app.engine, app.settings, path).run(started)
    except KeyboardInterrupt:
        raise PlatformError("scheduler aborted by a second stop signal; the job in progress was rolled back") from None
    click.echo("Scheduler stopped.", err=True)


@schedule_group.command("stop")
@click.option("--timeout", type=click.FloatRange(0), default=60, show_default=True, help="seconds to wait for the job in progress")
@click.pass_obj
def schedule_stop(app, timeout: float) -> None:
    """Stop the daemon on this machine (it finishes the job in progress first).

    \b
    Examples:
      python main.py schedule stop
      python main.py schedule stop --timeout 120
    """
    pid = stop_daemon(_pid_path(app), timeout)
    click.echo(f"Scheduler (pid {pid}) stopped.")


@schedule_group.command("status")
@_FORMAT
@click.pass_obj
def schedule_status(app, fmt: str) -> None:
    """Whether the daemon runs on this machine, and each job's next and last run.

    \b
    Examples:
      python main.py schedule status
    """
    path = _pid_path(app)
    pid = running_pid(path)
    rows = [_job_row(r) for r in jobs.list_jobs(app.engine)] if jobs.tables_exist(app.engine) else []
    data = {
        "running": pid is not None, "pid": pid, "pid_file": str(path),
        "warehouse": mask_url(app.engine.url.render_as_string(hide_password=False)),
        "jobs": [{k: r[k] for k in ("name", "schedule", "enabled", "next_run_at", "last_run_at", "last_status")} for r in rows],
    }  # fmt: skip
    state = f"running (pid {pid})" if pid else "not running"
    shown = [
        {"job": r["name"], "schedule": r["schedule"], "enabled": "yes" if r["enabled"] else "no",
         "next run (local)": r["next_run_local"], "last run (local)": r["last_run_local"], "last status": r["last_status"]}
        for r in rows
    ]  # fmt: skip
    emit(data, fmt, table(shown, title=f"Scheduler {state} · {data['warehouse']}") if shown else f"Scheduler {state}; no jobs.")


COMMANDS = (schedule_group,)
