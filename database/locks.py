"""The warehouse write lock: one ETL (or rollback, or replay) at a time per warehouse.

PostgreSQL: a session-level advisory lock, so it also holds across machines. SQLite: an
exclusive `flock` on a file beside the database (`<warehouse>.<lock id>.lock`), which exists
only while a run holds or waits for the lock: the holder deletes it before letting go, and a
waiter that got the lock on a deleted file tries again on the new one. Both are released by
the OS or server when the holding process dies, so a killed run never leaves a stale lock
behind (at most an empty lock file, which the next run reuses and deletes).

On PostgreSQL the session lock lives on a connection of its own. Should that connection break
while the run goes on (a network cut, `pg_terminate_backend`), the server releases the lock and
a second run could start; so the run's writing transaction also takes a transaction-level lock
(`lock_writes`): two writing transactions never overlap, whatever happens to the sessions.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, RootTransaction, text
from sqlalchemy.exc import SQLAlchemyError

from utils.errors import DatabaseError, TransientDatabaseError

log = logging.getLogger(__name__)

WAREHOUSE_LOCK_ID = 0x5244_5001  # "RDP" + 1: the ETL write lock
WRITE_TRANSACTION_LOCK_ID = 0x5244_5002  # held by the writing transaction itself (lock_writes)
_POLL_S = 0.25


@contextmanager
def warehouse_lock(
    engine: Engine, timeout_s: float, on_wait: Callable[[], None] | None = None, lock_id: int = WAREHOUSE_LOCK_ID
) -> Iterator[None]:
    """Hold the warehouse write lock; wait up to `timeout_s`, calling `on_wait` once if blocked."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, timeout_s, on_wait, lock_id):
            yield
    else:
        from database.engine import prepare_sqlite_folder

        prepare_sqlite_folder(engine)  # the lock file goes beside the warehouse: no folder made for a typo
        with _file_lock(Path(f"{engine.url.database}.{lock_id:x}.lock"), timeout_s, on_wait):
            yield


def _wait_loop(try_once: Callable[[], bool], timeout_s: float, on_wait: Callable[[], None] | None, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    warned = False
    while not try_once():
        if time.monotonic() >= deadline:
            raise TransientDatabaseError(
                f"another run holds the warehouse lock ({what}) and did not finish within {timeout_s:g} s; "
                "try again later or raise database.lock_timeout_s"
            )
        if not warned and on_wait is not None:
            on_wait()
            warned = True
        time.sleep(_POLL_S)


@contextmanager
def _advisory_lock(engine: Engine, timeout_s: float, on_wait: Callable[[], None] | None, lock_id: int) -> Iterator[None]:
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        key = _scoped_key(conn, lock_id)

        def attempt() -> bool:
            return bool(conn.execute(text("select pg_try_advisory_lock(:k)"), {"k": key}).scalar_one())

        _wait_loop(attempt, timeout_s, on_wait, "PostgreSQL advisory lock")
        try:
            yield
        finally:
            _unlock(conn, key)


def _unlock(conn: Connection, key: int) -> None:
    try:
        conn.execute(text("select pg_advisory_unlock(:k)"), {"k": key})
    except SQLAlchemyError as exc:
        # The session holding the lock broke during the run: the server released the lock with it.
        # The run's own transaction was guarded by lock_writes, so its outcome stands.
        log.warning("the connection holding the warehouse lock broke during the run (%s); the server released the lock", type(exc).__name__)


@contextmanager
def write_transaction(engine: Engine, timeout_s: float) -> Iterator[tuple[Connection, RootTransaction]]:
    """The one transaction of a run that writes the warehouse: on SQLite it starts with the file's
    write lock (BEGIN IMMEDIATE), on PostgreSQL it first takes the write-transaction lock."""
    from database.engine import WRITES

    with engine.connect() as conn:
        conn.execution_options(**{WRITES: True})
        with conn.begin() as trans:
            lock_writes(conn, timeout_s)
            yield conn, trans


def lock_writes(conn: Connection, timeout_s: float) -> None:
    """Make the caller's writing transaction exclusive by itself (PostgreSQL): a transaction-level
    advisory lock, released at commit or rollback, or when the session ends however it ends.
    Call it first in the transaction, before reading what the writes depend on. SQLite has one
    writer per file anyway."""
    if conn.dialect.name != "postgresql":
        return
    key = _scoped_key(conn, WRITE_TRANSACTION_LOCK_ID)

    def attempt() -> bool:
        return bool(conn.execute(text("select pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar_one())

    _wait_loop(attempt, timeout_s, None, "PostgreSQL write-transaction lock")


def _scoped_key(conn: Connection, lock_id: int) -> int:
    """The advisory-lock key of `lock_id` for this warehouse. Advisory locks are per database, but
    a warehouse is a schema: two warehouses in one database (search_path) must not block each other."""
    scope = conn.execute(text("select current_database() || '.' || coalesce(current_schema(), '')")).scalar_one()
    digest = hashlib.sha256(f"rdp-lock\0{lock_id}\0{scope}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 62) - 1)


@contextmanager
def _file_lock(path: Path, timeout_s: float, on_wait: Callable[[], None] | None) -> Iterator[None]:
    fd = None

    def attempt() -> bool:
        nonlocal fd
        if fd is None:
            fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if _same_file(fd, path):
            return True
        os.close(fd)  # the holder deleted the file before letting go: lock the current one
        fd = None
        return False

    try:
        _wait_loop(attempt, timeout_s, on_wait, f"lock file {path}")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # while still held: a waiter on this file sees it gone and retries
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        if fd is not None:
            os.close(fd)


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        from database.engine import os_problem

        raise DatabaseError(os_problem(path, exc) + "; the warehouse lock file cannot be created beside it") from None


def _same_file(fd: int, path: Path) -> bool:
    """Whether the locked descriptor is still the file at `path` (not one deleted meanwhile)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)
