"""Bulk movement of a DataFrame into a table: PostgreSQL COPY, SQLite executemany.

Never row-by-row ORM. Timestamps travel as text in one fixed form; NULLs stay NULLs.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)


@contextmanager
def _driver_cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """A raw DBAPI cursor whose errors surface as SQLAlchemy DBAPIError, like every other statement."""
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.driver_connection.cursor()
    try:
        yield cursor
    except dbapi.Error as exc:
        # Like SQLAlchemy's own statements: a broken connection is invalidated, so the rollback on
        # the way out does not fail with "connection already closed" and hide the real cause.
        lost = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(sql, None, exc, dbapi.Error, connection_invalidated=lost) from exc
    finally:
        with suppress(dbapi.Error):  # closing a cursor of a dead connection
            cursor.close()


def timestamp_text(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Timestamps as text in SQLITE_TS_FORMAT, the one form the warehouse and line identities
    use: whole seconds, a fraction dropped as strftime drops it (floored, so before 1970 too).
    Arrow's cast rather than strftime, which formats row by row in Python (docs/performance.md)."""
    return pc.floor_temporal(values, unit="second").cast(pa.timestamp("s")).cast(pa.string())


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """`frame` as the Arrow table both load paths send (timestamps as text in one fixed form)."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, timestamp_text(table.column(i)))
    return table


def _copy(conn: Connection, table: str, data: pa.Table) -> None:
    """COPY `data` into `table` (PostgreSQL); columns by name."""
    buf = io.BytesIO()
    pacsv.write_csv(data, buf, write_options=pacsv.WriteOptions(include_header=False))
    buf.seek(0)
    columns = ", ".join(f'"{c}"' for c in data.column_names)
    sql = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"
    with _driver_cursor(conn, sql) as cursor, _driver_chain_to_log():
        cursor.copy_expert(sql, buf, size=1 << 20)


@contextmanager
def _driver_chain_to_log() -> Iterator[None]:
    """psycopg2 2.9, when the connection breaks during COPY FROM STDIN, prints an exception chain
    (AdminShutdown ... SystemError) to stderr through sys.excepthook before raising the error to
    us. The error still reaches the caller (one `Error:` line); the chain goes to the log file."""
    previous = sys.excepthook
    sys.excepthook = lambda kind, value, _tb: log.debug("driver report during COPY: %s: %s", kind.__name__, value)
    try:
        yield
    finally:
        sys.excepthook = previous


def insert_frame(conn: Connection, table: str, frame: pd.DataFrame, suffix: str = "") -> int:
    """executemany INSERT of `frame` into `table` (SQLite), with an optional `suffix` such as an
    ON CONFLICT clause. Returns rows inserted."""
    if frame.empty:
        return 0
    _insert(conn, table, to_arrow(frame), suffix)
    return len(frame)


def _insert(conn: Connection, table: str, data: pa.Table, suffix: str = "") -> None:
    columns = ", ".join(f'"{c}"' for c in data.column_names)
    marks = ", ".join("?" for _ in data.column_names)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks}) {suffix}".rstrip()
    with _driver_cursor(conn, sql) as cursor:
        cursor.executemany(sql, _rows(data))


def _rows(table: pa.Table, batch: int = 5_000) -> Iterator[tuple]:
    """Rows as tuples, converted a slice at a time so memory stays small."""
    for start in range(0, table.num_rows, batch):
        part = table.slice(start, batch)
        yield from zip(*(col.to_pylist() for col in part.columns), strict=True)


def load_arrow(conn: Connection, table: str, data: pa.Table) -> int:
    """Bulk-load an Arrow table made by `to_arrow` into `table`: COPY on PostgreSQL, executemany
    on SQLite. Returns rows loaded."""
    if data.num_rows == 0:
        return 0
    if conn.dialect.name == "postgresql":
        _copy(conn, table, data)
    else:
        _insert(conn, table, data)
    return data.num_rows


def load_frame(conn: Connection, table: str, frame: pd.DataFrame) -> int:
    """Bulk-load `frame` into `table` with the fastest path of the connection's backend."""
    if frame.empty:
        return 0
    return load_arrow(conn, table, to_arrow(frame))
