"""Database sources: a table (--table) or a SELECT (--query) of any SQLAlchemy database URL.

Rows are streamed in chunks through a server-side cursor (`stream_results`), so memory stays
bounded by the chunk size whatever the table's size. The read runs in a read-only transaction
(PostgreSQL `SET TRANSACTION READ ONLY`, SQLite `PRAGMA query_only`), so a query can never
change the source database. A table is read in primary-key order when it has one, so its source
row numbers are stable from one run to the next. Column names are mapped like CSV headers
(`invoice_no`, `Invoice`, `customer_id` ... are recognised), values are converted to text like
workbook cells (numbers exactly, timestamps as `YYYY-MM-DD HH:MM:SS` in the session time zone).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from config.settings import Settings
from database.engine import resolve_url
from etl.ingestion import Chunk
from etl.mapping import resolve_columns
from etl.sources import LocalSource
from etl.workbook import canonical_positions, text_frame
from utils.errors import PlatformError, SourceError
from utils.urls import mask_url

_STRINGS_AND_COMMENTS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.DOTALL)
_BIND_LIKE = re.compile(r"(?<![:\w\\]):(?=\w)")  # ':name' that text() would take for a bind parameter


def _literal_text(sql: str):
    """The user's SQL as a text() clause with every colon kept literally (no bind parameters)."""
    return text(_BIND_LIKE.sub(r"\\:", sql))


def _first_line(exc: BaseException) -> str:
    detail = str(getattr(exc, "orig", None) or exc).strip()
    return mask_url(detail.splitlines()[0]) if detail else type(exc).__name__


def check_query(query: str) -> str:
    """The query without a trailing ';' if it is one SELECT (or WITH ... SELECT); SourceError otherwise."""
    body = query.strip().rstrip(";").strip()
    bare = _STRINGS_AND_COMMENTS.sub(" ", body)
    words = bare.split(None, 1)
    if not words or words[0].lower() not in ("select", "with"):
        raise SourceError(f"--query must be a SELECT statement, got {query.strip()[:60]!r}")
    if ";" in bare:
        raise SourceError("--query must be a single SELECT statement (found ';' separating statements)")
    return body


class DatabaseSource(LocalSource):
    """A table or query of a database, read in chunks with a server-side cursor."""

    def __init__(self, url: str, settings: Settings, options) -> None:
        self.masked = mask_url(url)
        if bool(options.table) == bool(options.query):
            raise SourceError(
                f"{self.masked}: a database source needs exactly one of --table NAME or --query 'SELECT ...'"
                + (" (both were given)" if options.table else "")
            )
        self.engine = self._engine(url, settings)
        self.checksum = None
        self.encoding = None
        self.estimated_rows = None
        self._column_map = options.column_map
        try:
            with self.engine.connect() as conn, conn.begin():
                _read_only(conn)
                if options.table:
                    self.statement = self._table_statement(conn, options.table)
                    self.location = f"{self.masked} (table {options.table})"
                    self.estimated_rows = conn.execute(select(func.count()).select_from(self.statement.subquery())).scalar()
                else:
                    query = check_query(options.query)
                    self.statement = _literal_text(query)
                    self.location = f"{self.masked} (query: {' '.join(query.split())})"
                    probe = conn.execute(_literal_text(f"SELECT * FROM ({query}\n) AS rdp_source LIMIT 0"))
                    self._mapping(list(probe.keys()))
                    probe.close()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise SourceError(f"{self.masked}: {_first_line(exc)}") from None
        except PlatformError:
            self.engine.dispose()
            raise

    def _engine(self, url: str, settings: Settings) -> Engine:
        try:
            resolved = resolve_url(url)
            parsed = make_url(resolved)
        except (PlatformError, ArgumentError):
            raise SourceError(f"{self.masked}: not a database URL; use e.g. postgresql://user@host/db with --table or --query") from None
        sqlite_file = (parsed.database or "") if parsed.get_backend_name() == "sqlite" else None
        if sqlite_file is not None and (sqlite_file in ("", ":memory:") or not Path(sqlite_file).is_file()):
            raise SourceError(f"{self.masked}: SQLite database file not found; check the path in the URL")
        connect_args = {"connect_timeout": settings.database.connect_timeout_s} if parsed.get_backend_name() == "postgresql" else {}
        try:
            return create_engine(resolved, poolclass=NullPool, connect_args=connect_args)
        except (NoSuchModuleError, ImportError, ArgumentError) as exc:
            raise SourceError(
                f"{self.masked}: no driver for this database ({exc}); install it or use postgresql:// or sqlite:///"
            ) from None

    def _table_statement(self, conn: Connection, name: str):
        schema, _, table = name.rpartition(".")
        inspector = inspect(conn)
        names = inspector.get_table_names(schema=schema or None) + inspector.get_view_names(schema=schema or None)
        found = table if table in names else next((n for n in names if n.lower() == table.lower()), None)
        if found is None:
            listed = ", ".join(sorted(names)) or "none"
            raise SourceError(f"{self.masked}: no table {name!r}; tables found{' in ' + schema if schema else ''}: {listed}")
        try:
            reflected = Table(found, MetaData(), schema=schema or None, autoload_with=conn)
        except NoSuchTableError:
            raise SourceError(f"{self.masked}: table {name!r} cannot be read") from None
        self._mapping([c.name for c in reflected.columns])
        return select(reflected).order_by(*reflected.primary_key.columns)

    def _mapping(self, headers: list[str]) -> None:
        self.positions = canonical_positions(headers, resolve_columns(headers, self._column_map, self.masked))

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        first = 1
        try:
            with self.engine.connect() as conn, conn.begin():
                _read_only(conn)
                result = conn.execution_options(stream_results=True, max_row_buffer=chunk_size).execute(self.statement)
                for rows in result.partitions(chunk_size):
                    yield Chunk(text_frame(rows, self.positions), np.arange(first, first + len(rows), dtype=np.int64))
                    first += len(rows)
        except SQLAlchemyError as exc:
            raise SourceError(f"{self.masked}: reading failed at row {first}: {_first_line(exc)}") from None
        finally:
            self.engine.dispose()


def _read_only(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
