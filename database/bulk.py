"""Bulk movement of a DataFrame into a table: PostgreSQL COPY, SQLite executemany.

Never row-by-row ORM. Timestamps travel as text in one fixed form; NULLs stay NULLs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from database.models import SQLITE_TS_FORMAT


@contextmanager
def _driver_cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """A raw DBAPI cursor whose errors surface as SQLAlchemy DBAPIError, like every other statement."""
    dbapi = conn.dialect.loaded_dbapi
    cursor = conn.connection.driver_connection.cursor()
    try:
        yield cursor
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, None, exc, dbapi.Error) from exc
    finally:
        cursor.close()


def _arrow(frame: pd.DataFrame) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type):
            table = table.set_column(i, field.name, pc.strftime(table.column(i).cast(pa.timestamp("s")), format=SQLITE_TS_FORMAT))
    return table


def copy_frame(conn: Connection, table: str, frame: pd.DataFrame) -> int:
    """COPY `frame` into `table` (PostgreSQL); columns by name. Returns rows copied."""
    if frame.empty:
        return 0
    buf = io.BytesIO()
    pacsv.write_csv(_arrow(frame), buf, write_options=pacsv.WriteOptions(include_header=False))
    buf.seek(0)
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    sql = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"
    with _driver_cursor(conn, sql) as cursor:
        cursor.copy_expert(sql, buf)
    return len(frame)


def insert_frame(conn: Connection, table: str, frame: pd.DataFrame) -> int:
    """executemany INSERT of `frame` into `table` (SQLite). Returns rows inserted."""
    if frame.empty:
        return 0
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    marks = ", ".join("?" for _ in frame.columns)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
    with _driver_cursor(conn, sql) as cursor:
        cursor.executemany(sql, _rows(_arrow(frame)))
    return len(frame)


def _rows(table: pa.Table, batch: int = 5_000) -> Iterator[tuple]:
    """Rows as tuples, converted a slice at a time so memory stays small."""
    for start in range(0, table.num_rows, batch):
        part = table.slice(start, batch)
        yield from zip(*(col.to_pylist() for col in part.columns), strict=True)


def load_frame(conn: Connection, table: str, frame: pd.DataFrame) -> int:
    """Bulk-load `frame` into `table` with the fastest path of the connection's backend."""
    if conn.dialect.name == "postgresql":
        return copy_frame(conn, table, frame)
    return insert_frame(conn, table, frame)
