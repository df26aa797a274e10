"""One ETL run: read -> clean -> stage -> merge, in one transaction, with the run ledger.

Every row read ends in exactly one place: a new fact, the quarantine, or "already loaded"
(a line the warehouse already holds). The summary shows the three counts; they add up.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy import Engine, Row, text
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from database.aggregates import AGGREGATE_TABLES
from database.errors import describe
from database.locks import warehouse_lock, write_transaction
from database.partitions import analyze_fact, parent_statistics_stale
from database.schema import ensure_schema
from etl import ledger
from etl.cleaning import Cleaner
from etl.loader import LoadCounts, WarehouseLoader
from etl.sources import Source, SourceOptions, open_source
from etl.stopwatch import Stopwatch
from monitoring.alerts import run_alerts
from monitoring.gate import GateResult, evaluate, record
from monitoring.history import MAX_PROFILE_VALUES, profile_changes
from utils.errors import PlatformError, QualityGateError
from utils.logsetup import current_run_id
from utils.memory import release_memory, use_system_allocator
from utils.progress import SILENT, RunProgress
from utils.vocabulary import SNAKE

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """The outcome of one run, as shown to the user and stored in the ledger."""

    run_id: int
    status: str
    job_name: str
    source: str
    checksum: str
    encoding: str
    backend: str
    engine: str = "pandas"  # or "dask (<cluster>, N worker threads)"
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_already_loaded: int = 0
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)  # rows with each reason (a row may have several)
    quarantine_by_reasons: dict[str, int] = field(default_factory=dict)  # rows by their reasons as stored: adds up
    rows_with_several_reasons: int = 0
    source_columns: list[str] | None = None  # the header as read (None: the source has no header, e.g. a query)
    header_changes: dict | None = None  # against the previous run of the same feed: added, removed, previous_run
    new_values: dict[str, list[str]] = field(default_factory=dict)  # values of quality_rules.new_value_columns never seen before
    profile: dict | None = field(default=None, repr=False)  # stored in etl_runs.source_profile
    dimension_changes: dict[str, dict[str, int]] = field(default_factory=dict)
    duration_s: float = 0.0
    message: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    key_cache: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        if self.status == "skipped" or self.duration_s <= 0:
            return 0.0
        return self.rows_read / self.duration_s

    def as_dict(self) -> dict:
        """JSON-ready form (with rows_per_s)."""
        data = asdict(self) | {"rows_per_s": round(self.rows_per_s, 1)}
        del data["profile"]
        return data

    def ledger_counts(self) -> dict:
        profile = {"source_profile": json.dumps(self.profile, sort_keys=True)} if self.profile is not None else {}
        return profile | {
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_quarantined": self.rows_quarantined,
            "rows_already_loaded": self.rows_already_loaded,
            "quarantine_by_reason": self.quarantine_by_reason,
            "dimension_changes": self.dimension_changes,
            "duration_s": round(self.duration_s, 3),
        }


@dataclass
class EtlOptions:
    """What to run: the command-line options of `etl`."""

    source: Path | str
    job_name: str = "etl"
    chunk_size: int | None = None
    dry_run: bool = False
    force: bool = False
    reader: SourceOptions = field(default_factory=SourceOptions)


# Refreshed after a PostgreSQL load that moved the fact by a tenth; the fact first, at a smaller
# statistics target (database/partitions.py analyze_fact; bench/write_floor.py times it).
ANALYZED_TABLES = ("fact_sales", *AGGREGATE_TABLES, "dim_customers", "dim_products")


def run_etl(
    engine: Engine,
    settings: Settings,
    options: EtlOptions,
    progress: RunProgress = SILENT,
    on_wait: Callable[[], None] | None = None,
    source: Source | None = None,
) -> RunSummary:
    """Run one ETL of `options.source` (or of an already opened `source`) into the warehouse."""
    use_system_allocator()
    info = source or open_source(str(options.source), settings, options.reader)
    try:
        with warehouse_lock(engine, settings.database.lock_timeout_s, on_wait):
            # Inside the lock: runs started together on a new warehouse must not all create it
            # (on SQLite the losers failed with "database is locked").
            ensure_schema(engine, settings.warehouse)
            stale = ledger.close_stale_runs(engine)
            if stale:
                log.warning("runs %s were interrupted earlier and are now marked failed", stale)
            return _locked_run(engine, settings, options, info, progress)
    except SQLAlchemyError as exc:
        raise describe(engine, exc) from None


def _locked_run(engine: Engine, settings: Settings, options: EtlOptions, info: Source, progress: RunProgress) -> RunSummary:
    previous = ledger.previous_load(engine, info.checksum) if info.checksum else None
    run_id = ledger.open_run(engine, options.job_name, info.location, info.checksum, info.encoding)
    token = current_run_id.set(run_id)
    summary = RunSummary(run_id, "running", options.job_name, info.location, info.checksum or "", info.encoding or "", engine.dialect.name)
    summary.engine = info.engine_name
    started, wall = ledger.utcnow(), time.perf_counter()
    log.info("run %s started: %s (%s, sha256 %s)", run_id, info.location, info.encoding, (info.checksum or "-")[:12])
    try:
        if previous is not None and not options.force:
            _skip(summary, previous)
            summary.duration_s = time.perf_counter() - wall
            with engine.begin() as conn:
                ledger.close_run(conn, run_id, summary.status, started, summary.ledger_counts(), summary.message)
            return summary
        _process(engine, settings, options, info, summary, progress, started, wall)
        if not options.dry_run:
            progress.phase("planner statistics")
            _analyze(engine, summary)
            progress.phase("alerts")
            _alert(engine, settings, run_id)
        log.info(
            "run %s %s: %s read, %s loaded, %s quarantined, %s already loaded",
            run_id,
            summary.status,
            summary.rows_read,
            summary.rows_loaded,
            summary.rows_quarantined,
            summary.rows_already_loaded,
        )
        return summary
    except BaseException as exc:
        summary.status, summary.duration_s = "failed", time.perf_counter() - wall
        summary.message = str(exc) if isinstance(exc, PlatformError) else f"{type(exc).__name__}: {exc}"
        with engine.begin() as conn:
            ledger.close_run(conn, run_id, "failed", started, summary.ledger_counts(), summary.message[:2000])
        log.error("run %s failed: %s", run_id, summary.message)
        if isinstance(exc, PlatformError):
            _alert(engine, settings, run_id)
        raise
    finally:
        current_run_id.reset(token)


def _analyze(engine: Engine, summary: RunSummary) -> None:
    """Fresh planner statistics after a load that changed the fact table by a tenth or more:
    PostgreSQL never auto-analyzes a partitioned parent (see parent_statistics_stale). The run has
    committed: a failure here is reported, it does not fail the run."""
    if engine.dialect.name != "postgresql" or summary.rows_loaded == 0:
        return
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            if parent_statistics_stale(conn):
                # The fact (its parent, then every partition) takes most of the time; the other
                # tables are analyzed beside it on a second connection.
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdp-analyze") as side:
                    others = side.submit(_analyze_tables, engine, ANALYZED_TABLES[1:])
                    analyze_fact(conn)
                    others.result()
    except SQLAlchemyError as exc:
        problem = describe(engine, exc)
        log.warning("run %s: planner statistics were not refreshed: %s", summary.run_id, problem)
        summary.message += f"; planner statistics were not refreshed ({problem}): run ANALYZE {', '.join(ANALYZED_TABLES)}"
    summary.timings["analyze"] = round(time.perf_counter() - start, 4)


def _analyze_tables(engine: Engine, tables: tuple[str, ...]) -> None:
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text(f"ANALYZE {', '.join(tables)}"))


def _alert(engine: Engine, settings: Settings, run_id: int) -> None:
    """Evaluate alert rules after a run; an alerting problem never fails the run."""
    try:
        run_alerts(engine, settings, run_id)
    except PlatformError as exc:
        log.error("alerts after run %s could not be evaluated: %s", run_id, exc)


def _skip(summary: RunSummary, previous: Row) -> None:
    summary.status = "skipped"
    summary.rows_read = summary.rows_already_loaded = previous.rows_read
    summary.message = (
        f"source unchanged since run {previous.run_id} (same SHA-256): all {previous.rows_read:,} rows are already "
        "loaded or quarantined, nothing to do. Use --force to read it again (still exactly once)."
    )


def _process(
    engine: Engine,
    settings: Settings,
    options: EtlOptions,
    info: Source,
    summary: RunSummary,
    progress: RunProgress,
    started,
    wall: float,
) -> None:
    chunk_size = options.chunk_size or settings.etl.chunk_size
    stopwatch = Stopwatch()
    with (
        closing(Cleaner(settings)) as cleaner,
        write_transaction(engine, settings.database.lock_timeout_s) as (conn, trans),
        closing(WarehouseLoader(conn, summary.run_id, stopwatch)) as loader,
    ):
        loader.prepare()
        # Sources -> clean (this thread, or Dask workers) -> transform and load (the loader
        # thread, then its writer thread): loading chunk n overlaps reading and cleaning chunk n+1.
        values: dict[str, set[str] | None] = {c: set() for c in settings.quality_rules.new_value_columns}
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdp-stage") as stager:
            pending: Future | None = None
            for accepted, rejected, rows_read in info.cleaned_batches(cleaner, chunk_size, stopwatch):
                _observe_values(values, accepted)
                if pending is not None:
                    pending.result()
                pending = stager.submit(loader.load, accepted, rejected)
                summary.rows_read += rows_read
                del accepted, rejected
                release_memory()
                progress(summary.rows_read)
            if pending is not None:
                pending.result()
        progress.phase("finishing the load")
        counts = loader.finalize()
        _account(summary, counts)
        _profile(conn, summary, options.job_name, info, values)
        progress.phase("quality gate")
        with stopwatch.timed("quality_gate"):
            gate = evaluate(conn, settings, summary.run_id, fact_holds_only_run=loader.facts_empty)
        summary.quality = {k: round(v, 4) for k, v in gate.scores.items()}
        summary.duration_s = time.perf_counter() - wall
        if options.dry_run:
            summary.status = "dry_run"
            summary.message = "dry run: nothing was written; the counts show what a real run would do"
            trans.rollback()
        elif gate.blocking_failures and settings.quality_rules.on_failure == "fail":
            trans.rollback()
            with engine.begin() as record_conn:
                record(record_conn, summary.run_id, gate)
            raise QualityGateError(_gate_message(gate))
        else:
            record(conn, summary.run_id, gate)
            summary.status = "success"
            summary.message = _success_message(summary)
            if gate.blocking_failures:
                summary.message += f"; quality gate failed but quality_rules.on_failure is warn: {_failed_checks(gate)}"
            ledger.close_run(conn, summary.run_id, "success", started, summary.ledger_counts(), summary.message)
        progress.phase("commit")
    if options.dry_run:
        with engine.begin() as conn:
            ledger.close_run(conn, summary.run_id, "dry_run", started, summary.ledger_counts(), summary.message)


def _observe_values(values: dict[str, set[str] | None], accepted: pd.DataFrame) -> None:
    """Distinct values of the tracked low-cardinality columns; a column past MAX_PROFILE_VALUES is dropped."""
    for column, seen in values.items():
        name = SNAKE[column]
        if seen is None or name not in accepted.columns:
            continue
        seen.update(str(v) for v in accepted[name].dropna().unique())
        if len(seen) > MAX_PROFILE_VALUES:
            values[column] = None


def _profile(conn, summary: RunSummary, job_name: str, info: Source, values: dict[str, set[str] | None]) -> None:
    """The run's source profile (header as read, tracked values) and how it differs from earlier runs."""
    summary.source_columns = [h.strip() for h in info.header] if info.header else None
    summary.profile = {"columns": summary.source_columns, "values": {c: sorted(v) if v is not None else None for c, v in values.items()}}
    changes = profile_changes(conn, summary.run_id, job_name, info.location, summary.profile)
    summary.new_values = changes.new_values
    if changes.drifted:
        summary.header_changes = {"previous_run": changes.previous_run, "added": changes.added, "removed": changes.removed}


def _failed_checks(gate: GateResult) -> str:
    return ", ".join(f"{r.check} {r.measured:.4f} < {r.threshold:.2f}" for r in gate.blocking_failures)


def _gate_message(gate: GateResult) -> str:
    return (
        f"quality gate failed ({_failed_checks(gate)}); the run was rolled back and nothing was loaded. "
        "See python main.py quality report, fix the source, or set quality_rules.on_failure: warn"
    )


def _account(summary: RunSummary, counts: LoadCounts) -> None:
    summary.timings = counts.timings
    summary.key_cache = counts.key_cache
    summary.rows_loaded = counts.facts_loaded
    summary.rows_quarantined = counts.quarantined
    summary.rows_already_loaded = counts.facts_already_loaded + counts.quarantine_already_held
    combos = counts.quarantine_by_reasons
    by_reason: Counter = Counter()
    for reasons, n in combos.items():
        by_reason.update(dict.fromkeys(reasons.split(";"), n))
    summary.quarantine_by_reason = dict(sorted(by_reason.items()))
    summary.quarantine_by_reasons = dict(sorted(combos.items(), key=lambda kv: (";" in kv[0], -kv[1], kv[0])))
    summary.rows_with_several_reasons = sum(n for reasons, n in combos.items() if ";" in reasons)
    summary.dimension_changes = counts.dimensions
    total = summary.rows_loaded + summary.rows_quarantined + summary.rows_already_loaded
    if total != summary.rows_read:
        raise RuntimeError(f"internal error: {summary.rows_read} rows read but {total} accounted for; the run was rolled back")


def _success_message(summary: RunSummary) -> str:
    if summary.rows_loaded == 0 and summary.rows_quarantined == 0 and summary.rows_read:
        return "every row of this source was already in the warehouse (loaded or quarantined by an earlier run): 0 new facts"
    return (
        f"{summary.rows_loaded:,} new facts, {summary.rows_quarantined:,} rows quarantined, {summary.rows_already_loaded:,} already loaded"
    )
