"""Running one job: its own lock (no overlap, across processes and machines), history rows,
retries of transient failures with backoff, and alerts on terminal ones.

Transient: the database is unreachable or locked (`TransientDatabaseError`, or a connection
error from the driver). Terminal: bad data (`SourceError`), a failed quality gate, any other
error; they are recorded and alerted once, never retried.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from config.settings import Settings
from database.errors import describe
from database.locks import WAREHOUSE_LOCK_ID, warehouse_lock
from etl import ledger
from etl.pipeline import RunSummary
from etl.request import RunRequest, run_request, source_runner
from scheduling import history, incoming, jobs
from scheduling.definitions import JobDef
from scheduling.kinds import alert_failure, run_kind
from utils.errors import PlatformError, TransientDatabaseError

log = logging.getLogger(__name__)


class JobBusyError(PlatformError):
    """Another process (or machine) is running this job right now."""


@dataclass
class Outcome:
    """What one attempt did; filled as it goes, so a failure still records the files already loaded."""

    status: str = "skipped"
    etl_run_ids: list[int] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    bad_unchanged: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def note_summaries(self, summaries: list[RunSummary], name: str | None = None) -> None:
        """Record ETL runs: a run that loaded counts as loaded, one that found everything loaded as already loaded."""
        for summary in summaries:
            shown = name or summary.source
            self.etl_run_ids.append(summary.run_id)
            if summary.status in ("success", "dry_run"):
                dry = ", dry run: rolled back" if summary.status == "dry_run" else ""
                self.loaded.append(
                    f"{shown} (etl run {summary.run_id}: {summary.rows_loaded:,} new facts, {summary.rows_quarantined:,} quarantined{dry})"
                )
            else:
                self.already.append(shown)

    def message(self) -> str:
        parts = []
        if self.loaded:
            parts.append("loaded " + ", ".join(self.loaded))
        if self.already:
            parts.append(f"{len(self.already)} file(s) already loaded (same SHA-256): {_names(self.already)}")
        if self.waiting:
            parts.append(f"{len(self.waiting)} file(s) still being written, left for the next run: {_names(self.waiting)}")
        if self.bad_unchanged:
            parts.append(f"{len(self.bad_unchanged)} file(s) failed before and are unchanged, not retried: {_names(self.bad_unchanged)}")
        if self.failures:
            parts.append("failed: " + "; ".join(self.failures))
        parts += self.notes
        if self.error:
            parts.append(self.error)
        return "; ".join(parts) or "nothing to do"


def _names(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclass
class RunReport:
    """The result of running a job once (all its attempts), as `schedule run` shows it."""

    job_name: str
    status: str
    attempts: int
    job_run_ids: list[int]
    etl_run_ids: list[int]
    files_loaded: int
    message: str
    duration_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def is_transient(engine: Engine, exc: BaseException) -> bool:
    """True when retrying may help: the database is unreachable, restarting or locked."""
    if isinstance(exc, TransientDatabaseError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(describe(engine, exc), TransientDatabaseError)
    return False


def _error_text(engine: Engine, exc: BaseException) -> str:
    if isinstance(exc, PlatformError):
        return str(exc)
    if isinstance(exc, SQLAlchemyError):
        return str(describe(engine, exc))
    if isinstance(exc, KeyboardInterrupt):
        return "aborted by a second stop signal; the load in progress was rolled back"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class JobRunner:
    """Runs jobs for one warehouse; remembers file checksums and bad files between runs."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        stopping: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.engine, self.settings = engine, settings
        self.stopping = stopping
        self.sleep = sleep or _plain_sleep
        self.checksums = incoming.ChecksumCache()
        self.failed_files: dict[tuple[str, int, int], str] = {}
        self._lock_scope: str | None = None

    # --- one job, all attempts ---------------------------------------------------------

    def run(self, job: JobDef, trigger: str = "schedule") -> RunReport:
        """Run `job` now; retries transient failures with backoff (unless stopping)."""
        wall = time.perf_counter()
        run_ids: list[int] = []
        attempt = 1
        while True:
            outcome = Outcome()
            try:
                self._attempt(job, trigger, attempt, outcome, run_ids)
                return self._report(job, outcome, attempt, run_ids, wall)
            except JobBusyError as exc:
                outcome.error = str(exc)
                self._record_busy(job, trigger, attempt, outcome, run_ids)
                return self._report(job, outcome, attempt, run_ids, wall)
            except Exception as exc:
                outcome.error = outcome.error or _error_text(self.engine, exc)
                if not self._will_retry(exc, attempt):
                    outcome.status = "failed"
                    alert_failure(self.engine, self.settings, job.name, outcome.message())
                    return self._report(job, outcome, attempt, run_ids, wall)
                delay = self.settings.scheduler.retry_backoff_s * 2 ** (attempt - 1)
                log.warning(
                    "job '%s' attempt %s failed (transient): %s; retry %s/%s in %.1f s",
                    job.name, attempt, outcome.error, attempt, self.settings.scheduler.max_retries, delay,
                )  # fmt: skip
                if not self.sleep(delay):
                    outcome.status, outcome.notes = "failed", [*outcome.notes, "retry abandoned: the scheduler is stopping"]
                    return self._report(job, outcome, attempt, run_ids, wall)
                attempt += 1

    def _will_retry(self, exc: BaseException, attempt: int) -> bool:
        return is_transient(self.engine, exc) and attempt <= self.settings.scheduler.max_retries and not self.stopping()

    def _report(self, job: JobDef, outcome: Outcome, attempts: int, run_ids: list[int], wall: float) -> RunReport:
        report = RunReport(
            job.name, outcome.status, attempts, run_ids, outcome.etl_run_ids, len(outcome.loaded), outcome.message(),
            round(time.perf_counter() - wall, 3),
        )  # fmt: skip
        level = logging.ERROR if report.status == "failed" else logging.INFO
        log.log(
            level, "job '%s' %s after %s attempt(s) in %.2f s: %s", job.name, report.status, attempts, report.duration_s, report.message
        )
        return report

    # --- one attempt -------------------------------------------------------------------

    def _attempt(self, job: JobDef, trigger: str, attempt: int, outcome: Outcome, run_ids: list[int]) -> None:
        with ExitStack() as stack:
            try:
                stack.enter_context(warehouse_lock(self.engine, 0, lock_id=self.job_lock_id(job.name)))
            except TransientDatabaseError:
                raise JobBusyError(
                    f"job '{job.name}' is already running in another process or on another machine; this run was skipped"
                ) from None
            if history.close_stale(self.engine, job.name):
                log.warning("job '%s': an earlier run was interrupted (process killed or database lost); marked failed", job.name)
            job_run_id, started = history.open_run(self.engine, job.name, job.kind, trigger, attempt)
            run_ids.append(job_run_id)
            log.info("job '%s' run %s started (%s, attempt %s): %s", job.name, job_run_id, trigger, attempt, job.what())
            try:
                self._execute(job, outcome)
            except BaseException as exc:
                outcome.error = _error_text(self.engine, exc)
                retry = isinstance(exc, Exception) and self._will_retry(exc, attempt)
                outcome.status = "retrying" if retry else "failed"
                self._close(job, job_run_id, started, outcome)
                raise
            self._close(job, job_run_id, started, outcome)

    def _close(self, job: JobDef, job_run_id: int, started, outcome: Outcome) -> None:
        try:
            history.close_run(self.engine, job_run_id, outcome.status, outcome.message(), outcome.etl_run_ids, len(outcome.loaded))
            jobs.record_last_run(self.engine, job.name, started, outcome.status)
        except SQLAlchemyError as exc:
            log.error(
                "job '%s' run %s: could not record its outcome (%s): %s", job.name, job_run_id, exc.__class__.__name__, outcome.message()
            )

    def _record_busy(self, job: JobDef, trigger: str, attempt: int, outcome: Outcome, run_ids: list[int]) -> None:
        outcome.status = "skipped"
        try:
            run_ids.append(history.record(self.engine, job.name, job.kind, trigger, "skipped", outcome.message(), attempt))
        except SQLAlchemyError as exc:
            log.error("job '%s': could not record the skipped run (%s)", job.name, exc.__class__.__name__)

    def job_lock_id(self, name: str) -> int:
        """A lock key per job and warehouse: on PostgreSQL the same on every machine."""
        if self._lock_scope is None:
            self._lock_scope = self._scope()
        digest = hashlib.sha256(f"rdp-job\0{self._lock_scope}\0{name}".encode()).digest()
        key = int.from_bytes(digest[:8], "big") & ((1 << 62) - 1)
        return key if key != WAREHOUSE_LOCK_ID else key + 1

    def _scope(self) -> str:
        if self.engine.dialect.name != "postgresql":
            return ""  # the SQLite lock file sits beside the database file already
        with self.engine.connect() as conn:
            return "/".join(conn.execute(text("select current_database(), current_schema()")).one())

    # --- what the job does -------------------------------------------------------------

    def _execute(self, job: JobDef, outcome: Outcome) -> None:
        if job.kind != "etl":
            outcome.notes.append(run_kind(job.kind, self.engine, self.settings))
            outcome.status = "success"
            return
        request = job.request()
        if "://" in request.source:
            self._load_url(request, outcome)
        else:
            self._load_files(job, request, outcome)
        outcome.status = "failed" if outcome.failures else "success" if outcome.loaded else "skipped"
        if outcome.failures:
            alert_failure(self.engine, self.settings, job.name, outcome.message())

    def _load_url(self, request: RunRequest, outcome: Outcome) -> None:
        """A database or HTTP source: read again on each run (no checksum; the line identities keep it exactly once)."""
        outcome.note_summaries(run_request(self.engine, self.settings, request).summaries)

    def _load_files(self, job: JobDef, request: RunRequest, outcome: Outcome) -> None:
        listing = incoming.list_settled(request.source, self.settings.scheduler.settle_seconds)
        self.checksums.keep_only(listing.files + listing.unsettled)
        self._forget_changed_bad_files(listing.files + listing.unsettled)
        outcome.waiting = [p.name for p in listing.unsettled]
        if listing.note:
            outcome.notes.append(listing.note)
        pending = []
        for path in listing.files:
            found = self._pending(job, request, path, outcome)
            if found:
                pending.append((path, *found))
        if not pending:
            return
        with source_runner(self.engine, self.settings, request, [str(p) for p, _, _ in pending]) as run:
            for index, (path, stamp, checksum) in enumerate(pending):
                if self.stopping():
                    outcome.notes.append(
                        f"stopped before {len(pending) - index} file(s): the scheduler is stopping; they load on its next run"
                    )
                    return
                self._load_one(job, request, run, path, stamp, checksum, outcome)

    def _forget_changed_bad_files(self, present: list[Path]) -> None:
        stamps = set()
        for path in present:
            try:
                stamps.add(incoming.file_stamp(path))
            except FileNotFoundError:
                continue
        for stamp in [s for s in self.failed_files if s not in stamps]:
            del self.failed_files[stamp]

    def _pending(self, job: JobDef, request: RunRequest, path: Path, outcome: Outcome) -> tuple[tuple, str] | None:
        """(stamp, checksum) of a file to load now; None for one that is gone, failed unchanged, or already loaded."""
        try:
            stamp = incoming.file_stamp(path)
            checksum = self.checksums.checksum(path)
        except FileNotFoundError:
            return None  # moved away since the listing
        if stamp in self.failed_files:
            outcome.bad_unchanged.append(path.name)
            return None
        if not request.force and ledger.previous_load(self.engine, checksum) is not None:
            outcome.already.append(path.name)
            self._archive(job, request, path, checksum, outcome)
            return None
        return stamp, checksum

    def _load_one(self, job: JobDef, request: RunRequest, run, path: Path, stamp: tuple, checksum: str, outcome: Outcome) -> None:
        try:
            summary = run(str(path))
        except Exception as exc:
            if is_transient(self.engine, exc):
                raise
            self.failed_files[stamp] = _error_text(self.engine, exc)
            outcome.failures.append(f"{path.name}: {_error_text(self.engine, exc)}")
            return
        outcome.note_summaries([summary], path.name)
        self._archive(job, request, path, checksum, outcome)

    def _archive(self, job: JobDef, request: RunRequest, path: Path, checksum: str, outcome: Outcome) -> None:
        folder = job.archive_dir or self.settings.scheduler.archive_dir
        if not folder or request.dry_run:
            return
        try:
            incoming.archive(path, self.settings.resolve_path(folder), checksum)
        except OSError as exc:
            outcome.notes.append(f"could not move {path.name} to the archive ({exc}); it stays and is skipped as already loaded")


def _plain_sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return True
