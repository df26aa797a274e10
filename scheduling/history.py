"""The scheduler's history (`job_runs`): a row per attempt, opened before the work, closed after."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Engine, insert, select, update

from database.scheduler_models import job_runs
from etl.ledger import utcnow

INTERRUPTED = "interrupted: the scheduler stopped (killed, or lost the database) before this run was recorded as finished"


def open_run(engine: Engine, job_name: str, kind: str, trigger: str, attempt: int, status: str = "running") -> tuple[int, datetime]:
    """Insert a history row in its own transaction; returns (job_run_id, started_at)."""
    started = utcnow()
    with engine.begin() as conn:
        result = conn.execute(
            insert(job_runs).values(
                job_name=job_name, kind=kind, trigger=trigger, status=status, attempt=attempt, started_at=started,
                files_loaded=0, pid=os.getpid(), host=socket.gethostname(),
            )
        )  # fmt: skip
        return int(result.inserted_primary_key[0]), started


def close_run(
    engine: Engine, job_run_id: int, status: str, message: str | None, etl_run_ids: Iterable[int] = (), files_loaded: int = 0
) -> None:
    """Write the attempt's outcome."""
    ids = ",".join(str(i) for i in etl_run_ids) or None
    with engine.begin() as conn:
        conn.execute(
            update(job_runs)
            .where(job_runs.c.job_run_id == job_run_id)
            .values(status=status, finished_at=utcnow(), message=(message or "")[:4000] or None, etl_run_ids=ids, files_loaded=files_loaded)
        )


def record(engine: Engine, job_name: str, kind: str, trigger: str, status: str, message: str, attempt: int = 1) -> int:
    """A finished row in one go (skipped runs)."""
    job_run_id, _ = open_run(engine, job_name, kind, trigger, attempt, status=status)
    close_run(engine, job_run_id, status, message)
    return job_run_id


def close_stale(engine: Engine, job_name: str) -> int:
    """Mark the job's rows left 'running' as failed; returns how many. Call only while holding the job's lock."""
    with engine.begin() as conn:
        result = conn.execute(
            update(job_runs)
            .where(job_runs.c.job_name == job_name, job_runs.c.status == "running")
            .values(status="failed", finished_at=utcnow(), message=INTERRUPTED)
        )
        return result.rowcount


def list_runs(engine: Engine, job_name: str | None = None, limit: int = 50, status: str | None = None) -> list[dict]:
    """The newest history rows first, as dicts."""
    query = select(job_runs).order_by(job_runs.c.job_run_id.desc()).limit(limit)
    if job_name:
        query = query.where(job_runs.c.job_name == job_name)
    if status:
        query = query.where(job_runs.c.status == status)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
