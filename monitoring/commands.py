"""`quality check|report|history|checks`, `quarantine list|show|export` (`quarantine replay` re-runs the cleaning stage, so it lives in etl/commands.py), `alerts run|list|ack|test`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from utils.errors import DatabaseError, PlatformError
from utils.files import write_shared
from utils.render import emit, table

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)
if TYPE_CHECKING:
    from sqlalchemy import Engine

_RUN = click.option("--run", "run_id", type=int, help="ETL run number (see runs list)")


@contextmanager
def warehouse(app, writes: bool = False) -> Iterator[Engine]:
    """The engine, with the schema in place and database errors turned into platform errors.
    A command that only reads (`writes` False) never creates an SQLite warehouse file."""
    from sqlalchemy.exc import SQLAlchemyError

    from database.engine import path_problem, sqlite_file
    from database.errors import describe
    from database.schema import ensure_schema

    engine = app.engine
    path = sqlite_file(engine)
    if not writes and path is not None and not path.is_file():
        raise DatabaseError(path_problem(path, creating=False) or f"the warehouse file {path} does not exist")
    try:
        ensure_schema(engine, app.settings.warehouse)
        yield engine
    except SQLAlchemyError as exc:
        raise describe(engine, exc) from None


def _safe(rows: list[dict]) -> list[dict]:
    """Rows for a rich table: text values escaped so that brackets in data are not read as markup."""
    return [{k: escape(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]


def _score(value: float) -> str:
    return f"{value:.4f}"


# -- quality ----------------------------------------------------------------------------------


@click.group("quality")
def quality_group() -> None:
    """Data-quality checks, scores, reports and history.

    \b
    Examples:
      python main.py quality check
      python main.py quality report
    """


@quality_group.command("check")
@click.option("--table", "table_name", help="only the checks of this table (see quality checks)")
@_FORMAT
@click.pass_obj
@click.pass_context
def quality_check(ctx: click.Context, app, table_name: str | None, fmt: str) -> None:
    """Run the checks on the warehouse now and keep the results; exit 1 when a blocking check fails.

    \b
    Examples:
      python main.py quality check
      python main.py quality check --table fact_sales --format json
    """
    from monitoring.gate import evaluate, record

    with warehouse(app, writes=True) as engine:
        with engine.connect() as conn:
            result = evaluate(conn, app.settings, None, table_name)
        with engine.begin() as conn:
            record(conn, None, result)
    rows = [
        {"check": r.check, "score": _score(r.measured), "threshold": f"{r.threshold:g}", "result": "pass" if r.passed else
         ("FAIL" if r.severity == "blocking" else "warn"), "offending": f"{r.offending:,}", "total": f"{r.total:,}"}
        for r in result.results
    ]  # fmt: skip
    title = f"Quality checks ({result.elapsed_s:.2f} s) - scores: " + ", ".join(f"{k} {v:.3f}" for k, v in result.scores.items())
    emit(result.as_dict(), fmt, table(rows, title=title))
    if fmt == "table":
        for r in result.blocking_failures + result.warnings:
            label = "FAIL" if r.severity == "blocking" else "warn"
            click.echo(f"{label} {r.check}: {r.offending:,} of {r.total:,}" + (f", e.g. {r.samples[0]}" if r.samples else ""))
    if result.blocking_failures:
        names = ", ".join(r.check for r in result.blocking_failures)
        click.echo(f"quality check failed: {len(result.blocking_failures)} blocking check(s) failed: {names}", err=True)
        ctx.exit(1)


@quality_group.command("checks")
@_FORMAT
@click.pass_obj
def quality_checks(app, fmt: str) -> None:
    """List every check with its table, threshold, severity and rule.

    \b
    Examples:
      python main.py quality checks
    """
    from monitoring.checks import catalogue

    specs = catalogue(app.settings)
    rows = [
        {"check": s.name, "dimension": s.dimension, "table": s.table, "column": s.column, "threshold": s.threshold,
         "severity": "blocking" if s.blocking else "warning", "rule": s.description}
        for s in specs
    ]  # fmt: skip
    emit(rows, fmt, table(rows, title=f"{len(rows)} quality checks"))


@quality_group.command("report")
@_RUN
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "html", "json"]), default="text", show_default=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), help="write the report to this file instead of the terminal")
@click.pass_obj
def quality_report(app, run_id: int | None, fmt: str, output: Path | None) -> None:
    """Scores, failing checks with samples, quarantine by reason, trends and anomalies.

    \b
    Examples:
      python main.py quality report
      python main.py quality report --format html --output quality.html
    """
    from monitoring.report import build_report, render

    with warehouse(app) as engine, engine.connect() as conn:
        text = render(build_report(conn, app.settings, run_id), fmt)
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        write_shared(output, text)  # a report to share: the user's umask decides who may read it
    except OSError as exc:
        raise PlatformError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"{fmt} report written to {output} ({len(text.encode()):,} bytes)")


@quality_group.command("history")
@click.option("--check", "check_name", help="only this check (names: quality checks)")
@click.option("--last", type=click.IntRange(1, 100_000), default=10, show_default=True, help="evaluations to show")
@_FORMAT
@click.pass_obj
def quality_history(app, check_name: str | None, last: int, fmt: str) -> None:
    """Past results of the checks, newest first.

    \b
    Examples:
      python main.py quality history --last 10
      python main.py quality history --check completeness.source.invoice_no
    """
    from monitoring.checks import catalogue
    from monitoring.history import history, known_checks

    with warehouse(app) as engine, engine.connect() as conn:
        if check_name is not None and check_name not in {s.name for s in catalogue(app.settings)} | known_checks(conn):
            raise PlatformError(f"unknown check '{check_name}'; see python main.py quality checks for the names")
        rows = history(conn, check_name, last)
    shown = [
        {"checked (UTC)": r["checked_at"], "run": r["run_id"] if r["run_id"] is not None else "-", "check": r["check_name"],
         "score": _score(r["measured"]), "threshold": f"{r['threshold']:g}", "result": "pass" if r["passed"] else "FAIL",
         "offending": f"{r['offending']:,}", "total": f"{r['total']:,}"}
        for r in rows
    ]  # fmt: skip
    emit(rows, fmt, table(shown, title="Quality history" + (f": {check_name}" if check_name else "")))


# -- quarantine -------------------------------------------------------------------------------


@click.group("quarantine")
def quarantine_group() -> None:
    """Rows the ETL rejected, with their reasons and raw values.

    \b
    Examples:
      python main.py quarantine list --limit 20
      python main.py quarantine export --format csv --output quarantine.csv
    """


@quarantine_group.command("list")
@_RUN
@click.option("--reason", help="only rows with this reason code (e.g. duplicate)")
@click.option("--limit", type=click.IntRange(1, 1_000_000), default=50, show_default=True)
@_FORMAT
@click.pass_obj
def quarantine_list(app, run_id: int | None, reason: str | None, limit: int, fmt: str) -> None:
    """List quarantined rows (oldest first).

    \b
    Examples:
      python main.py quarantine list --limit 20
      python main.py quarantine list --reason duplicate --run 1
    """
    from monitoring.quarantine import list_rows

    with warehouse(app) as engine, engine.connect() as conn:
        rows, total = list_rows(conn, run_id, reason, limit)
    short = {"quarantine_id": "id", "run_id": "run", "source_row": "row", "reasons": "reasons", "invoice_no": "invoice",
             "stock_code": "stock", "quantity": "qty", "unit_price": "price", "customer_id": "customer"}  # fmt: skip
    shown = [{label: row[col] for col, label in short.items()} for row in rows]
    emit({"total": total, "rows": rows}, fmt, table(_safe(shown), title=f"Quarantine: {len(rows):,} of {total:,} rows"))


@quarantine_group.command("show")
@click.argument("quarantine_id", type=int)
@_FORMAT
@click.pass_obj
def quarantine_show(app, quarantine_id: int, fmt: str) -> None:
    """One quarantined row in full, with what its reason codes mean.

    \b
    Examples:
      python main.py quarantine show 1
    """
    from monitoring.quarantine import show

    with warehouse(app) as engine, engine.connect() as conn:
        row = show(conn, quarantine_id)
    shown = [{"field": k, "value": "; ".join(v) if isinstance(v, list) else v} for k, v in row.items()]
    emit(row, fmt, table(_safe(shown), title=f"Quarantine row {quarantine_id}", columns=["field", "value"]))


@quarantine_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), required=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="file to write")
@_RUN
@click.option("--reason", help="only rows with this reason code")
@click.pass_obj
def quarantine_export(app, fmt: str, output: Path, run_id: int | None, reason: str | None) -> None:
    """Export quarantined rows (all, or of one run / reason) to CSV or JSON.

    \b
    Examples:
      python main.py quarantine export --format csv --output quarantine.csv
      python main.py quarantine export --reason non_positive_price --format json --output bad_prices.json
    """
    from monitoring.quarantine import export

    with warehouse(app) as engine, engine.connect() as conn:
        count = export(conn, output, fmt, run_id, reason)
    click.echo(f"{count:,} quarantined rows written to {output} ({fmt})")


# -- alerts -----------------------------------------------------------------------------------


@click.group("alerts")
def alerts_group() -> None:
    """Alerts on failed checks, anomalies and failed runs.

    \b
    Examples:
      python main.py alerts list
      python main.py alerts test --channel log
    """


def _alert_rows(alerts: list[dict]) -> list[dict]:
    return [
        {"id": a["id"], "raised (UTC)": a["raised_at"], "run": a["run_id"], "severity": a["severity"], "rule": a["rule"],
         "message": a["message"], "sent to": ", ".join(a["delivered"]),
         "errors": "; ".join(f"{k}: {v}" for k, v in (a.get("errors") or a.get("delivery_errors") or {}).items()),
         "acked": a.get("acked_at") or ""}
        for a in alerts
    ]  # fmt: skip


@alerts_group.command("run")
@_RUN
@_FORMAT
@click.pass_obj
def alerts_run(app, run_id: int | None, fmt: str) -> None:
    """Evaluate the alert rules over the latest results and send new alerts (the ETL does this after each run).

    \b
    Examples:
      python main.py alerts run
    """
    from monitoring.alerts import run_alerts
    from monitoring.history import require_run

    with warehouse(app, writes=True) as engine:
        if run_id is not None:
            with engine.connect() as conn:
                require_run(conn, run_id)
        raised = [a.as_dict() for a in run_alerts(engine, app.settings, run_id)]
    title = f"{len(raised)} new alert(s)" + ("" if raised else " (nothing new, or only repeats within the cool-down)")
    emit(raised, fmt, table(_safe(_alert_rows(raised)), title=title, columns=["id", "severity", "rule", "message", "sent to", "errors"]))


@alerts_group.command("list")
@click.option("--since", help="only alerts raised since then: 2024-05-01, '2024-05-01 08:00', or an age like 30m, 12h, 7d")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@_FORMAT
@click.pass_obj
def alerts_list(app, since: str | None, limit: int, fmt: str) -> None:
    """Raised alerts, newest first.

    \b
    Examples:
      python main.py alerts list --limit 10
      python main.py alerts list --since 2026-01-01 --format json
    """
    from monitoring.alerts import list_alerts, parse_since

    start = parse_since(since) if since else None
    with warehouse(app) as engine, engine.connect() as conn:
        rows = list_alerts(conn, start, limit)
    emit(rows, fmt, table(_safe(_alert_rows(rows)), title=f"{len(rows)} alert(s)"))


@alerts_group.command("ack")
@click.argument("alert_id", type=int)
@_FORMAT
@click.pass_obj
def alerts_ack(app, alert_id: int, fmt: str) -> None:
    """Acknowledge an alert.

    \b
    Examples:
      python main.py alerts ack 1
    """
    from monitoring.alerts import ack

    with warehouse(app, writes=True) as engine, engine.begin() as conn:
        row, changed = ack(conn, alert_id)
    note = "acknowledged" if changed else f"was already acknowledged at {row['acked_at']}"
    emit(row, fmt, f"alert {alert_id} {note}")


@alerts_group.command("test")
@click.option("--channel", "channel_name", required=True, help="channel name from alerts.channels")
@_FORMAT
@click.pass_obj
def alerts_test(app, channel_name: str, fmt: str) -> None:
    """Send a test alert on one channel; exit 1 if it cannot be delivered.

    \b
    Examples:
      python main.py alerts test --channel log
    """
    from monitoring.alerts import send_test_alert

    alert = send_test_alert(app.settings, channel_name)
    emit(alert.as_dict(), fmt, f"test alert delivered on channel '{channel_name}'")


COMMANDS = (quality_group, quarantine_group, alerts_group)
