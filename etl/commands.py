"""`etl`, `runs list|show` and `quarantine replay`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from etl.request import ENCODINGS, ENGINES, RUN_OPTIONS, RunRequest
from monitoring.commands import quarantine_group
from utils.errors import PlatformError
from utils.lazy import lazy_module
from utils.progress import ProgressBar
from utils.render import emit, table

if TYPE_CHECKING:  # the run's modules (pandas, pyarrow, SQLAlchemy) load when a command runs, not for help screens
    from etl.pipeline import RunSummary

ledger = lazy_module("etl.ledger")

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)


def _source_facts(s: RunSummary) -> list[str]:
    facts = [s.encoding] if s.encoding else []
    facts.append(f"sha256 {s.checksum[:12]}…" if s.checksum else "no checksum: not a file")
    return facts


def _reason_rows(s: RunSummary) -> list[dict]:
    """Quarantined rows by reason, each row once: a row with several reasons is counted on one
    line of its own, so the lines add up to the quarantined rows."""
    single = {r: n for r, n in s.quarantine_by_reasons.items() if ";" not in r}
    several = {r: n for r, n in s.quarantine_by_reasons.items() if ";" in r}
    rows = [{"": f"    {reason}", "value": f"{n:,}"} for reason, n in single.items()]
    if several:
        detail = ", ".join(f"{r.replace(';', ' + ')} {n:,}" for r, n in several.items())
        rows.append({"": "    rows with several reasons", "value": f"{s.rows_with_several_reasons:,} ({detail})"})
    return rows


def _summary_rows(s: RunSummary) -> list[dict]:
    rows = [
        {"": "run", "value": f"{s.run_id} ({s.status}) on {s.backend}"},
        {"": "engine", "value": s.engine},
        {"": "source", "value": f"{s.source} ({', '.join(_source_facts(s))})"},
        {"": "rows read", "value": f"{s.rows_read:,}"},
        {"": "  new facts", "value": f"{s.rows_loaded:,}"},
        {"": "  quarantined", "value": f"{s.rows_quarantined:,}"},
        *_reason_rows(s),
        {"": "  already loaded", "value": f"{s.rows_already_loaded:,}"},
    ]
    if s.header_changes:
        changed = [f"added {', '.join(s.header_changes['added'])}" if s.header_changes["added"] else "",
                   f"gone {', '.join(s.header_changes['removed'])}" if s.header_changes["removed"] else ""]  # fmt: skip
        rows.append({"": "header changed", "value": f"{'; '.join(c for c in changed if c)} (since run {s.header_changes['previous_run']})"})
    for column, values in s.new_values.items():
        rows.append({"": f"new {column}", "value": ", ".join(values)})
    if s.key_cache:
        rows.append({"": "key cache hit rate", "value": ", ".join(f"{k} {v['hit_rate']:.1%}" for k, v in s.key_cache.items())})
    if s.quality:
        rows.append({"": "quality", "value": ", ".join(f"{dim} {score:.3f}" for dim, score in s.quality.items())})
    for dim, changes in s.dimension_changes.items():
        rows.append({"": dim, "value": ", ".join(f"{k} {v:,}" for k, v in changes.items())})
    speed = f" ({s.rows_per_s:,.0f} rows/s)" if s.rows_per_s else ""
    rows.append({"": "time", "value": f"{s.duration_s:.2f} s{speed}"})
    rows.append({"": "note", "value": s.message or ""})
    return rows


def _delimiter(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    value = "\t" if value.lower() in ("tab", "\\t") else value
    if len(value) != 1:
        raise click.BadParameter(f"{value!r}: give one character, e.g. ';' or tab")
    return value


def run_options(func: Callable) -> Callable:
    """The options of one run, shared by `etl` and `schedule daily|weekly|every` (see `run_request_of`)."""
    options = [
        click.option("--chunk-size", type=click.IntRange(100, 5_000_000), help="rows per chunk (default: etl.chunk_size)"),
        click.option("--dry-run", is_flag=True, help="process everything, then roll back: shows what a run would do"),
        click.option("--force", is_flag=True, help="read the source even if an identical file was loaded (still exactly once)"),
        click.option(
            "--layout", help="a named source layout from the config (sources.NAME: columns, date formats, encoding, delimiter, decimal)"
        ),
        click.option(
            "--map",
            "mappings",
            multiple=True,
            metavar="TARGET=SOURCE",
            help="map a source column to a canonical one, e.g. --map UnitPrice=Preis",
        ),
        click.option("--sheet", help="workbooks: read only this sheet (default: every sheet)"),
        click.option("--table", help="database sources: the table to read"),
        click.option("--query", help="database sources: the SELECT to read"),
        click.option("--token-env", help="HTTP sources: environment variable holding a bearer token"),
        click.option(
            "--delimiter",
            callback=_delimiter,
            metavar="CHAR",
            help="delimited text: the field separator, e.g. ';' or tab (default: tab for .tsv, else etl.delimiter)",
        ),
        click.option(
            "--encoding", type=click.Choice(ENCODINGS), help="delimited text: the encoding (default: etl.encoding, auto-detected)"
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            help="pandas: this process reads and cleans; dask: Dask workers read and clean partitions of the files (default: etl.engine)",
        ),
        click.option(
            "--scheduler",
            metavar="ADDRESS",
            help="--engine dask: a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: etl.dask_scheduler, else a local cluster)",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def run_request_of(source: str, job_name: str, options: dict) -> RunRequest:
    """The request of parsed `run_options` (other keys of `options` are ignored)."""
    values = {name: options[name] for name in RUN_OPTIONS if name in options}
    values["mappings"] = tuple(values.get("mappings") or ())
    values["dry_run"], values["force"] = bool(values.get("dry_run")), bool(values.get("force"))
    return RunRequest(source=source, job_name=job_name, **values)


@click.command("etl")
@click.option(
    "--source",
    required=True,
    help="file (.csv .tsv .csv.gz .csv.bz2 .zip .xlsx), folder or glob (each file its own run), database URL or http(s) URL",
)
@click.option("--job-name", default="etl", show_default=True, help="name recorded in the run ledger")
@run_options
@_FORMAT
@click.pass_obj
def etl_command(app, source: str, job_name: str, fmt: str, **options) -> None:
    """Load sales extracts into the warehouse: every row ends as a fact, in the quarantine, or as already loaded.

    \b
    Examples:
      python main.py etl --source data/sample_sales.csv
      python main.py etl --source online_retail_II.xlsx --sheet "Year 2010-2011"
      python main.py etl --source sqlite:///shop.db --query "SELECT * FROM sales" --map UnitPrice=price

    The same options define a scheduled load: python main.py schedule daily --help.
    """
    request = run_request_of(source, job_name, options)
    from etl.request import run_request

    outcome = run_request(app.engine, app.settings, request, ProgressBar, _waiting)
    for failure in outcome.failures:
        click.echo(f"Error: {failure}", err=True)
    if len(outcome.sources) == 1:
        summary = outcome.summaries[0]
        emit(summary.as_dict(), fmt, table(_summary_rows(summary), title="ETL run summary", columns=["", "value"]))
        return
    rows = [{"run": s.run_id, "status": s.status, "source": Path(s.source).name, "read": f"{s.rows_read:,}", "loaded": f"{s.rows_loaded:,}",
             "quarantined": f"{s.rows_quarantined:,}", "already": f"{s.rows_already_loaded:,}"} for s in outcome.summaries]  # fmt: skip
    emit([s.as_dict() for s in outcome.summaries], fmt, table(rows, title=f"ETL of {len(outcome.sources)} sources"))
    if outcome.failures:
        n = len(outcome.sources)
        raise PlatformError(f"{len(outcome.failures)} of {n} sources failed; the others were loaded. First: {outcome.failures[0]}")


def _waiting() -> None:
    click.echo("Waiting for another run to release the warehouse lock…", err=True)


@click.group("runs")
def runs_group() -> None:
    """The run ledger.

    \b
    Examples:
      python main.py runs list
      python main.py runs show 1 --format json
    """


@runs_group.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@_FORMAT
@click.pass_obj
def runs_list(app, limit: int, fmt: str) -> None:
    """List the latest runs with their counts.

    \b
    Examples:
      python main.py runs list
      python main.py runs list --limit 5 --format json
    """
    from database.schema import upgrade_schema

    upgrade_schema(app.engine)  # a warehouse of an older version gains its new columns
    rows = [dict(r._mapping) for r in ledger.last_runs(app.engine, limit)]
    short = {"run_id": "run", "job_name": "job", "status": "status", "started_at": "started (UTC)", "duration_s": "seconds",
             "rows_read": "read", "rows_loaded": "loaded", "rows_quarantined": "quarantined", "rows_already_loaded": "already"}  # fmt: skip
    shown = [{label: _fmt_count(r[col]) for col, label in short.items()} for r in rows]
    emit(rows, fmt, table(shown, title="ETL runs", columns=list(short.values())))


def _fmt_count(value: object) -> object:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return value


@runs_group.command("show")
@click.argument("run_id", type=int)
@_FORMAT
@click.pass_obj
def runs_show(app, run_id: int, fmt: str) -> None:
    """Show one run of the ledger in full.

    \b
    Examples:
      python main.py runs show 1
      python main.py runs show 1 --format json
    """
    from database.schema import upgrade_schema

    upgrade_schema(app.engine)
    run = ledger.get_run(app.engine, run_id)
    if run is None:
        raise PlatformError(f"run {run_id} not found; see python main.py runs list")
    data = dict(run._mapping)
    for key in ("quarantine_by_reason", "dimension_changes"):
        data[key] = json.loads(data[key]) if data[key] else {}
    emit(data, fmt, table([{"field": k, "value": v} for k, v in data.items()], title=f"Run {run_id}"))


# `quarantine replay` joins the quarantine group of monitoring/commands.py: it re-runs this package's cleaning.
@quarantine_group.command("replay")
@click.option("--run", "run_id", type=int, help="only rows quarantined by this run")
@click.option("--reason", help="only rows with this reason code")
@click.option("--dry-run", is_flag=True, help="show what would happen, change nothing")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_obj
def quarantine_replay(app, run_id: int | None, reason: str | None, dry_run: bool, fmt: str) -> None:
    """Re-process quarantined rows under the current rules; rows that now pass are loaded exactly once.

    \b
    Examples:
      python main.py quarantine replay --dry-run
      python main.py quarantine replay --reason bad_invoice_date
      python main.py quarantine replay --run 3 --format json
    """
    from etl.replay import replay

    result = replay(app.engine, app.settings, run_id, reason, dry_run)
    data = {k: v for k, v in result.__dict__.items()}
    rows = [
        {"": "replay run", "value": f"{result.run_id}" + (" (dry run)" if dry_run else "")},
        {"": "rows considered", "value": f"{result.considered:,}"},
        {"": "  loaded", "value": f"{result.loaded:,}"},
        {"": "  already in the warehouse", "value": f"{result.already_loaded:,}"},
        {"": "  still quarantined", "value": f"{result.still_quarantined:,}"},
    ] + [{"": f"    {code}", "value": f"{n:,}"} for code, n in sorted(result.still_by_reason.items())]
    emit(data, fmt, table(rows, title="Quarantine replay", columns=["", "value"]))


COMMANDS = (etl_command, runs_group)
