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


@click.command("etl")
@click.option(
    "--source",
    required=True,
    help="file (.csv .tsv .csv.gz .csv.bz2 .zip .xlsx), folder or glob (each file its own run), database URL or http(s) URL",
)
@click.option("--job-name", default="etl", show_default=True, help="name recorded in the run ledger")
@click.option("--chunk-size", type=click.IntRange(100, 5_000_000), help="rows per chunk (default: etl.chunk_size)")
@click.option("--dry-run", is_flag=True, help="process everything, then roll back: shows what a run would do")
@click.option("--force", is_flag=True, help="read the source even if an identical file was loaded (still exactly once)")
@click.option("--layout", help="a named source layout from the config (sources.NAME: columns, date formats, encoding, delimiter, decimal)")
@click.option(
    "--map", "mappings", multiple=True, metavar="TARGET=SOURCE", help="map a source column to a canonical one, e.g. --map UnitPrice=Preis"
)
@click.option("--sheet", help="workbooks: read only this sheet (default: every sheet)")
@click.option("--table", "table_name", help="database sources: the table to read")
@click.option("--query", help="database sources: the SELECT to read")
@click.option("--token-env", help="HTTP sources: environment variable holding a bearer token")
@click.option(
    "--engine",
    "engine_name",
    type=click.Choice(["pandas", "dask"]),
    help="pandas: this process reads and cleans; dask: Dask workers read and clean partitions of the files (default: etl.engine)",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="--engine dask: a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (default: etl.dask_scheduler, else a local cluster)",
)
@_FORMAT
@click.pass_obj
def etl_command(
    app,
    source: str,
    job_name: str,
    chunk_size: int | None,
    dry_run: bool,
    force: bool,
    layout: str | None,
    mappings: tuple[str, ...],
    sheet: str | None,
    table_name: str | None,
    query: str | None,
    token_env: str | None,
    engine_name: str | None,
    scheduler: str | None,
    fmt: str,
) -> None:
    """Load sales extracts into the warehouse: every row ends as a fact, in the quarantine, or as already loaded."""
    from etl.dask_engine import engine_for
    from etl.sources import expand_sources

    settings, reader = _reader_options(app.settings, layout, mappings, sheet, table_name, query, token_env)
    specs = expand_sources(source)
    summaries, failures = [], []
    with engine_for(settings, engine_name, scheduler, specs) as cluster:
        for spec in specs:
            try:
                options = EtlOptions(spec, job_name, chunk_size, dry_run, force, reader)
                summaries.append(_load_one(app, settings, spec, reader, options, cluster))
            except PlatformError as exc:
                if len(specs) == 1:
                    raise
                failures.append(f"{spec}: {exc}")
                click.echo(f"Error: {exc}", err=True)
    if len(specs) == 1:
        summary = summaries[0]
        emit(summary.as_dict(), fmt, table(_summary_rows(summary), title="ETL run summary", columns=["", "value"]))
        return
    rows = [{"run": s.run_id, "status": s.status, "source": Path(s.source).name, "read": f"{s.rows_read:,}", "loaded": f"{s.rows_loaded:,}",
             "quarantined": f"{s.rows_quarantined:,}", "already": f"{s.rows_already_loaded:,}"} for s in summaries]  # fmt: skip
    emit([s.as_dict() for s in summaries], fmt, table(rows, title=f"ETL of {len(specs)} sources"))
    if failures:
        raise PlatformError(f"{len(failures)} of {len(specs)} sources failed; the others were loaded. First: {failures[0]}")


def _reader_options(settings, layout, mappings, sheet, table_name, query, token_env):
    from etl.mapping import parse_map_options
    from etl.sources import SourceOptions

    reader = SourceOptions(sheet=sheet, table=table_name, query=query, token_env=token_env)
    if layout is not None:
        if layout not in settings.sources:
            known = ", ".join(settings.sources) or "none configured"
            raise PlatformError(f"unknown layout '{layout}'; define sources.{layout} in the config (known: {known})")
        spec = settings.sources[layout]
        reader.column_map = dict(spec.columns)
        reader.encoding, reader.delimiter = spec.encoding, spec.delimiter
        etl = settings.etl.model_copy(
            update={k: v for k, v in {"date_formats": spec.date_formats, "decimal": spec.decimal}.items() if v is not None}
        )
        settings = settings.model_copy(update={"etl": etl})
    reader.column_map.update(parse_map_options(mappings))
    return settings, reader


def _load_one(app, settings, spec: str, reader, options: EtlOptions, cluster=None) -> RunSummary:
    from etl.dask_engine import open_dask_source
    from etl.sources import open_source

    opened = open_source(spec, settings, reader) if cluster is None else open_dask_source(spec, settings, reader, cluster)
    bar, update = _progress_bar(opened.estimated_rows)

    def waiting() -> None:
        click.echo("Waiting for another run to release the warehouse lock…", err=True)

    with bar:
        return run_etl(app.engine, settings, options, update, waiting, source=opened)


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
@click.option("--rows", type=click.IntRange(max=100_000_000), default=50_000, show_default=True, help="data rows to write")
@click.option("--seed", type=int, default=42, show_default=True, help="same seed and options, same rows")
@click.option(
    "--output", type=click.Path(path_type=Path), required=True, help="CSV file to write (.gz for gzip); with --split, the folder to write"
)
@click.option(
    "--split",
    type=click.Choice(["day", "store"]),
    help="write a folder instead: one CSV per trading day (sales-YYYY-MM-DD.csv) or per store (sales-store-NN.csv), plus _manifest.json",
)
@click.option("--stores", type=click.IntRange(1, 500), help="with --split store: how many stores  [default: 10]")
@click.option("--overwrite", is_flag=True, help="with --split: replace a folder an earlier data generate wrote (a file is always replaced)")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), default="2010-12-01", show_default=True, help="first day of trading")
@click.option("--days", type=click.IntRange(1, 10_000), default=374, show_default=True, help="days the rows spread over")
@_FORMAT
def data_generate(rows, seed, output: Path, split, stores, overwrite: bool, start, days: int, fmt: str) -> None:
    """Write a synthetic extract with the profile of the real UCI Online Retail file (one file, or a folder with --split)."""
    from etl.generator import generate_folder, generate_sales

    if stores is not None and split != "store":
        raise click.UsageError("--stores needs --split store")
    try:
        if split:
            result = generate_folder(output, rows, seed, split, stores or 10, start.date(), days, overwrite=overwrite)
        else:
            result = generate_sales(output, rows, seed, start.date(), days)
    except (ValueError, OSError) as exc:
        raise PlatformError(f"cannot generate {output}: {exc}") from None
    data = {"path": str(result.path), "files": result.files, "rows": result.rows, "bytes": result.bytes, "invoices": result.invoices}
    data |= {"customers": result.customers, "duplicates": result.duplicates, "seconds": round(result.seconds, 3)}
    data["rows_per_s"] = round(result.rows / result.seconds) if result.seconds > 0 else None
    emit(data, fmt, table([{"": k, "value": v} for k, v in data.items()], title="Generated sample", columns=["", "value"]))


COMMANDS = (etl_command, runs_group, data_group)
