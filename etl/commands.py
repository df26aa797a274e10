"""`etl`, `runs list|show` and `data generate`."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from etl import ledger
from etl.pipeline import EtlOptions, RunSummary, run_etl
from utils.errors import PlatformError
from utils.render import emit, table

_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="table for people, json for scripts"
)


def _progress_bar(total: int | None) -> tuple[Progress | nullcontext, callable]:
    if not sys.stderr.isatty():
        return nullcontext(), None
    bar = Progress(
        TextColumn("[bold]loading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} rows/s"), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True,
    )  # fmt: skip
    task = bar.add_task("etl", total=total, rate="-")

    def update(rows: int) -> None:
        elapsed = bar.tasks[0].elapsed or 0
        bar.update(task, completed=rows, rate=f"{rows / elapsed:,.0f}" if elapsed else "-")

    return bar, update


def _summary_rows(s: RunSummary) -> list[dict]:
    rows = [
        {"": "run", "value": f"{s.run_id} ({s.status}) on {s.backend}"},
        {"": "source", "value": f"{s.source} ({s.encoding}, sha256 {s.checksum[:12]}…)"},
        {"": "rows read", "value": f"{s.rows_read:,}"},
        {"": "  new facts", "value": f"{s.rows_loaded:,}"},
        {"": "  quarantined", "value": f"{s.rows_quarantined:,}"},
        {"": "  already loaded", "value": f"{s.rows_already_loaded:,}"},
    ]
    rows += [{"": f"    {reason}", "value": f"{n:,}"} for reason, n in s.quarantine_by_reason.items()]
    for dim, changes in s.dimension_changes.items():
        rows.append({"": dim, "value": ", ".join(f"{k} {v:,}" for k, v in changes.items())})
    speed = f" ({s.rows_per_s:,.0f} rows/s)" if s.rows_per_s else ""
    rows.append({"": "time", "value": f"{s.duration_s:.2f} s{speed}"})
    rows.append({"": "note", "value": s.message or ""})
    return rows


@click.command("etl")
@click.option("--source", required=True, type=click.Path(path_type=Path), help="CSV extract to load (.csv, .csv.gz, .csv.bz2)")
@click.option("--job-name", default="etl", show_default=True, help="name recorded in the run ledger")
@click.option("--chunk-size", type=click.IntRange(100, 5_000_000), help="rows per chunk (default: etl.chunk_size)")
@click.option("--dry-run", is_flag=True, help="process everything, then roll back: shows what a run would do")
@click.option("--force", is_flag=True, help="read the source even if an identical file was loaded (still exactly once)")
@_FORMAT
@click.pass_obj
def etl_command(app, source: Path, job_name: str, chunk_size: int | None, dry_run: bool, force: bool, fmt: str) -> None:
    """Load a sales extract into the warehouse: every row ends as a fact, in the quarantine, or as already loaded."""
    from etl.ingestion import inspect_source

    info = inspect_source(source, app.settings.etl.encoding, app.settings.etl.delimiter)
    bar, update = _progress_bar(info.estimated_rows)

    def waiting() -> None:
        click.echo("Waiting for another run to release the warehouse lock…", err=True)

    with bar:
        summary = run_etl(app.engine, app.settings, EtlOptions(source, job_name, chunk_size, dry_run, force), update, waiting)
    emit(summary.as_dict(), fmt, table(_summary_rows(summary), title="ETL run summary", columns=["", "value"]))


@click.group("runs")
def runs_group() -> None:
    """The run ledger."""


@runs_group.command("list")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@_FORMAT
@click.pass_obj
def runs_list(app, limit: int, fmt: str) -> None:
    """List the latest runs with their counts."""
    rows = [dict(r._mapping) for r in ledger.last_runs(app.engine, limit)]
    short = {"run_id": "run", "job_name": "job", "status": "status", "started_at": "started (UTC)", "duration_s": "s",
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
    """Show one run of the ledger in full."""
    run = ledger.get_run(app.engine, run_id)
    if run is None:
        raise PlatformError(f"run {run_id} not found; see python main.py runs list")
    data = dict(run._mapping)
    for key in ("quarantine_by_reason", "dimension_changes"):
        data[key] = json.loads(data[key]) if data[key] else {}
    emit(data, fmt, table([{"field": k, "value": v} for k, v in data.items()], title=f"Run {run_id}"))


@click.group("data")
def data_group() -> None:
    """Sample data."""


@data_group.command("generate")
@click.option("--rows", type=click.IntRange(0, 100_000_000), default=50_000, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), required=True, help="CSV file to write (.gz for gzip)")
@_FORMAT
def data_generate(rows: int, seed: int, output: Path, fmt: str) -> None:
    """Write a synthetic extract with the profile of the real UCI Online Retail file."""
    from etl.generator import generate_sales

    try:
        result = generate_sales(output, rows, seed)
    except (ValueError, OSError) as exc:
        raise PlatformError(f"cannot generate {output}: {exc}") from None
    data = {k: str(v) if isinstance(v, Path) else round(v, 3) if isinstance(v, float) else v for k, v in result.__dict__.items()}
    emit(data, fmt, table([{"": k, "value": v} for k, v in data.items()], title="Generated sample", columns=["", "value"]))


COMMANDS = (etl_command, runs_group, data_group)
