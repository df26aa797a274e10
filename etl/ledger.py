"""The run ledger (`etl_runs`): a row per run, opened before the work and closed after it."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, func, insert, select, update

from database.models import EtlRun

INTERRUPTED = "interrupted: the process ended before the run finished (detected at the next start)"


def utcnow() -> datetime:
    """Current UTC time without tzinfo (as stored)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def close_stale_runs(engine: Engine) -> list[int]:
    """Mark runs left 'running' by a dead process as failed. Call while holding the warehouse lock."""
    with engine.begin() as conn:
        stale = [r for (r,) in conn.execute(select(EtlRun.run_id).where(EtlRun.status == "running"))]
        if stale:
            conn.execute(update(EtlRun).where(EtlRun.run_id.in_(stale)).values(status="failed", message=INTERRUPTED, finished_at=utcnow()))
    return stale


def open_run(engine: Engine, job_name: str, source: str, checksum: str | None, encoding: str | None, kind: str = "load") -> int:
    """Insert a 'running' ledger row in its own transaction and return its run id."""
    with engine.begin() as conn:
        result = conn.execute(
            insert(EtlRun).values(
                job_name=job_name, source=source, source_checksum=checksum, encoding=encoding, status="running",
                started_at=utcnow(), pid=os.getpid(), host=socket.gethostname(), kind=kind,
            )
        )  # fmt: skip
        return int(result.inserted_primary_key[0])


def previous_load(engine: Engine, checksum: str) -> Row | None:
    """The latest successful run of a source with this checksum, if any."""
    with engine.connect() as conn:
        row = conn.execute(
            select(EtlRun).where(EtlRun.source_checksum == checksum, EtlRun.status == "success").order_by(EtlRun.run_id.desc()).limit(1)
        ).first()
    return row


def close_run(conn: Connection, run_id: int, status: str, started: datetime, counts: dict, message: str | None = None) -> None:
    """Write the run's final status and counts (in the caller's transaction)."""
    finished = utcnow()
    values = {"duration_s": (finished - started).total_seconds()} | dict(counts)
    for key in ("quarantine_by_reason", "dimension_changes"):
        if key in values and not isinstance(values[key], str):
            values[key] = json.dumps(values[key], sort_keys=True)
    conn.execute(update(EtlRun).where(EtlRun.run_id == run_id).values(status=status, finished_at=finished, message=message, **values))


def last_runs(engine: Engine, limit: int = 20) -> list[Row]:
    """The newest runs first."""
    with engine.connect() as conn:
        return list(conn.execute(select(EtlRun).order_by(EtlRun.run_id.desc()).limit(limit)))


def run_count(engine: Engine) -> int:
    """How many runs the ledger holds."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(EtlRun)).scalar_one())


def get_run(engine: Engine, run_id: int) -> Row | None:
    """One ledger row, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(EtlRun).where(EtlRun.run_id == run_id)).first()
    return row
