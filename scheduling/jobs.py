"""Job definitions: validation, the `scheduled_jobs` table, and when a job is due.

Times are the local wall-clock time of the machine the daemon runs on (what the `schedule`
library uses); stored timestamps are UTC, like every other table of the warehouse.
"""

from __future__ import annotations

import difflib
from dataclasses import fields
from datetime import UTC, datetime

import schedule
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from database.scheduler_models import scheduled_jobs
from database.schema import missing_tables, upgrade_schema
from etl.ledger import utcnow
from scheduling.definitions import JobDef
from utils.errors import PlatformError

# --- schedule computation -----------------------------------------------------------------


def attach(scheduler: schedule.Scheduler, job: JobDef, func) -> schedule.Job:
    """Add `job` to a `schedule` scheduler, calling `func` when due."""
    if job.schedule_type == "every":
        return scheduler.every(job.interval_s).seconds.do(func)
    if job.schedule_type == "weekly":
        return getattr(scheduler.every(), job.weekday).at(job.at_time).do(func)
    return scheduler.every().day.at(job.at_time).do(func)


def next_run_local(job: JobDef) -> datetime:
    """When the job is next due, counted from now (local time, as the daemon counts)."""
    return attach(schedule.Scheduler(), job, lambda: None).next_run


def to_utc(local: datetime) -> datetime:
    """A naive local time as a naive UTC time (as stored)."""
    return local.astimezone(UTC).replace(tzinfo=None, microsecond=0)


def to_local(utc: datetime | None) -> datetime | None:
    """A stored naive UTC time as naive local time (for people)."""
    return utc.replace(tzinfo=UTC).astimezone().replace(tzinfo=None) if utc else None


# --- the table ----------------------------------------------------------------------------


def tables_exist(engine: Engine) -> bool:
    """Whether the scheduler's tables exist (read-only commands do not create them, but bring them up to date)."""
    missing = missing_tables(engine)
    if "scheduled_jobs" in missing or "job_runs" in missing:
        return False
    upgrade_schema(engine)
    return True


def definition_of(row) -> JobDef:
    """The definition part of a scheduled_jobs row."""
    return JobDef(**{f.name: getattr(row, f.name) for f in fields(JobDef)})


def add_job(engine: Engine, job: JobDef, replace: bool = False) -> bool:
    """Store a new job (or replace one of the same name when `replace`); True when one was replaced.

    Each transaction starts with its write: on SQLite in WAL mode a transaction that reads
    first and writes later fails at once ("database is locked") if another process wrote in
    between, e.g. the daemon recording a run.
    """
    now = utcnow()
    values = {f.name: getattr(job, f.name) for f in fields(JobDef)}
    values |= {"updated_at": now, "next_run_at": to_utc(next_run_local(job)) if job.enabled else None}
    with engine.begin() as conn:
        if replace and conn.execute(update(scheduled_jobs).where(scheduled_jobs.c.name == job.name).values(**values)).rowcount:
            return True
    try:
        with engine.begin() as conn:
            conn.execute(insert(scheduled_jobs).values(created_at=now, **values))
    except IntegrityError:
        raise PlatformError(
            f"a job named '{job.name}' already exists; choose another --name, add --replace, or remove it first (schedule remove {job.name})"
        ) from None
    return False


def _missing(engine: Engine, name: str) -> PlatformError:
    names = [j.name for j in list_jobs(engine)]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return PlatformError(f"no job named '{name}'{hint}; see python main.py schedule list")


def get_job(engine: Engine, name: str):
    """One job's row, or a PlatformError naming the closest job."""
    with engine.connect() as conn:
        row = conn.execute(select(scheduled_jobs).where(scheduled_jobs.c.name == name)).first()
    if row is None:
        raise _missing(engine, name)
    return row


def get_definition(engine: Engine, name: str) -> JobDef:
    return definition_of(get_job(engine, name))


def list_jobs(engine: Engine) -> list:
    """Every job row, by name."""
    with engine.connect() as conn:
        return list(conn.execute(select(scheduled_jobs).order_by(scheduled_jobs.c.name)))


def definitions(engine: Engine) -> dict[str, JobDef]:
    """Every job's definition by name (what the daemon compares to notice a change)."""
    return {row.name: definition_of(row) for row in list_jobs(engine)}


def remove_job(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        if conn.execute(delete(scheduled_jobs).where(scheduled_jobs.c.name == name)).rowcount == 0:
            raise _missing(engine, name)


def set_enabled(engine: Engine, name: str, enabled: bool) -> JobDef:
    """Enable or disable a job; enabling counts its next run from now (no catch-up of the pause)."""
    job = get_definition(engine, name)
    next_run = to_utc(next_run_local(job)) if enabled else None
    with engine.begin() as conn:
        conn.execute(
            update(scheduled_jobs).where(scheduled_jobs.c.name == name).values(enabled=enabled, updated_at=utcnow(), next_run_at=next_run)
        )
    return get_definition(engine, name)


def record_next_run(engine: Engine, name: str, next_run_local_time: datetime | None) -> None:
    """Persist when the daemon will run the job next (a past value later means: missed)."""
    value = to_utc(next_run_local_time) if next_run_local_time else None
    with engine.begin() as conn:
        conn.execute(update(scheduled_jobs).where(scheduled_jobs.c.name == name).values(next_run_at=value))


def record_last_run(engine: Engine, name: str, started: datetime, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(scheduled_jobs).where(scheduled_jobs.c.name == name).values(last_run_at=started, last_status=status))


def missed_jobs(engine: Engine, now_utc: datetime | None = None) -> list[tuple[JobDef, datetime]]:
    """Enabled jobs whose stored next run is in the past (the daemon was not running then)."""
    now_utc = now_utc or utcnow()
    with engine.connect() as conn:
        rows = list(
            conn.execute(
                select(scheduled_jobs).where(
                    scheduled_jobs.c.enabled.is_(True), scheduled_jobs.c.next_run_at.is_not(None), scheduled_jobs.c.next_run_at < now_utc
                )
            )
        )
    return [(definition_of(r), r.next_run_at) for r in sorted(rows, key=lambda r: r.next_run_at)]
