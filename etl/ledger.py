"""The run ledger (`etl_runs`): a row per run, opened before the work and closed after it."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, insert, select, update

from database.locks import write_transaction
from database.models import etl_runs

INTERRUPTED = "interrupted: the process ended before the run finished (detected at the next start)"


def utcnow() -> datetime:
    """Current UTC time without tzinfo (as stored)."""
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def close_stale_runs(engine: Engine) -> list[int]:
    """Mark runs left 'running' by a dead process as failed. Call while holding the warehouse lock."""
    # One statement that writes first: on SQLite a read-then-write transaction fails at once
    # ("database is locked") when another process wrote in between, whatever the busy timeout.
    with engine.begin() as conn:
        closed = conn.execute(
            update(etl_runs)
            .where(etl_runs.c.status == "running")
            .values(status="failed", message=INTERRUPTED, finished_at=utcnow())
            .returning(etl_runs.c.run_id)
        )
        return sorted(r for (r,) in closed)


def open_run(engine: Engine, job_name: str, source: str, checksum: str | None, encoding: str | None, kind: str = "load") -> int:
    """Insert a 'running' ledger row in its own transaction and return its run id."""
    with engine.begin() as conn:
        result = conn.execute(
            insert(etl_runs).values(
                job_name=job_name, source=source, source_checksum=checksum, encoding=encoding, status="running",
                started_at=utcnow(), pid=os.getpid(), host=socket.gethostname(), kind=kind,
            )
        )  # fmt: skip
        return int(result.inserted_primary_key[0])


def previous_load(engine: Engine, checksum: str) -> Row | None:
    """The latest successful run of a source with this checksum, if any."""
    with engine.connect() as conn:
        row = conn.execute(
            select(etl_runs)
            .where(etl_runs.c.source_checksum == checksum, etl_runs.c.status == "success")
            .order_by(etl_runs.c.run_id.desc())
            .limit(1)
        ).first()
    return row


def run_in_transaction(
    engine: Engine,
    run_id: int,
    started: datetime,
    dry_run: bool,
    work: Callable[[Connection], tuple[dict, str]],
    lock_timeout_s: float,
) -> None:
    """Do `work` in one transaction and close the ledger row with it: `success` commits with the
    work; a dry run rolls the work back and records `dry_run`; any failure records `failed`.
    `work` returns the ledger counts and the message."""
    try:
        with write_transaction(engine, lock_timeout_s) as (conn, trans):
            counts, message = work(conn)
            if dry_run:
                trans.rollback()
            else:
                close_run(conn, run_id, "success", started, counts, message)
        if dry_run:
            with engine.begin() as conn:
                close_run(conn, run_id, "dry_run", started, counts, "dry run: " + message)
    except BaseException as exc:
        with engine.begin() as conn:
            close_run(conn, run_id, "failed", started, {}, f"{type(exc).__name__}: {exc}"[:2000])
        raise


def close_run(conn: Connection, run_id: int, status: str, started: datetime, counts: dict, message: str | None = None) -> None:
    """Write the run's final status and counts (in the caller's transaction)."""
    finished = utcnow()
    values = {"duration_s": (finished - started).total_seconds()} | dict(counts)
    for key in ("quarantine_by_reason", "dimension_changes"):
        if key in values and not isinstance(values[key], str):
            values[key] = json.dumps(values[key], sort_keys=True)
    conn.execute(update(etl_runs).where(etl_runs.c.run_id == run_id).values(status=status, finished_at=finished, message=message, **values))


def last_runs(engine: Engine, limit: int = 20) -> list[Row]:
    """The newest runs first."""
    with engine.connect() as conn:
        return list(conn.execute(select(etl_runs).order_by(etl_runs.c.run_id.desc()).limit(limit)))


def get_run(engine: Engine, run_id: int) -> Row | None:
    """One ledger row, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(etl_runs).where(etl_runs.c.run_id == run_id)).first()
    return row
