"""The query service: read-only SQL and the standard queries, answered through the cache.

Every query runs in a read-only transaction with a statement timeout (PostgreSQL: READ ONLY,
REPEATABLE READ, `SET LOCAL statement_timeout`; SQLite: a connection opened read-only, cancelled
by a progress handler). The transaction first reads the warehouse's data version from the run
ledger; the version is part of the cache key, and the answer is computed in the same snapshot,
so an answer is stored under the version it belongs to and a load, replay or rollback makes
every older answer unreachable.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, CursorResult, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from config.cache import CacheSettings
from config.settings import PROJECT_ROOT
from database.aggregate_sql import AGGREGATE_TABLES
from database.engine import path_problem
from database.errors import describe
from performance.cache import CacheUnavailable, DecodedAnswers, QueryCache, cache_key, encode_result, open_cache
from performance.queries import LATEST_MONTH_SQL, NamedQuery, bind, get_query
from performance.sqlguard import QueryError, QueryRefused, check_read_only, unversioned_table
from utils.errors import PlatformError

log = logging.getLogger(__name__)

# The data version, and whether every aggregate table exists (the queries' aggregate forms need them).
_VERSION_SQL = {
    "postgresql": "SELECT COUNT(*), COALESCE(MAX(run_id), 0), COUNT(finished_at), "
    "SUM(CASE WHEN status IN ('success', 'rolled_back') THEN 1 ELSE 0 END), "
    + " AND ".join(f"to_regclass('{t}') IS NOT NULL" for t in AGGREGATE_TABLES)
    + " FROM etl_runs",
    "sqlite": "SELECT COUNT(*), COALESCE(MAX(run_id), 0), COUNT(finished_at), "
    "SUM(CASE WHEN status IN ('success', 'rolled_back') THEN 1 ELSE 0 END), "
    "(SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
    f"AND name IN ({', '.join(repr(t) for t in AGGREGATE_TABLES)})) = {len(AGGREGATE_TABLES)} "
    "FROM etl_runs",
}
_TABLES_SQL = {
    "postgresql": "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname = ANY (current_schemas(false))",
    "sqlite": "SELECT name FROM sqlite_master WHERE type IN ('table', 'view')",
}
NO_WAREHOUSE = "the warehouse has no run ledger yet; load data first: python main.py etl --source FILE"


@dataclass
class QueryResult:
    """An answer and how it was produced."""

    columns: list[str]
    rows: list[tuple]
    cache: str  # hit, miss, off (--no-cache or cache disabled), uncacheable, unavailable
    elapsed_ms: float
    data_version: str
    name: str | None = None
    form: str = "ad-hoc"  # aggregate, fact or ad-hoc
    params: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # why not cached, when it was not
    blob: bytes | None = field(default=None, repr=False)  # a cached answer not decoded yet
    key: str = field(default="", repr=False)  # its cache key

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "form": self.form, "params": self.params, "row_count": len(self.rows), "cache": self.cache,
            "elapsed_ms": round(self.elapsed_ms, 3), "data_version": self.data_version, "note": self.note,
        }  # fmt: skip


@dataclass(frozen=True)
class DataVersion:
    token: str
    aggregates: bool


class QueryService:
    """Runs read-only queries against one warehouse; thread-safe (share one per process)."""

    def __init__(self, engine: Engine, settings: CacheSettings, cache: QueryCache | None = None, base_dir: Path = PROJECT_ROOT) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.settings = settings
        self.base_dir = base_dir
        self._cache = cache
        self._cache_problem: str | None = None
        self._lock = threading.Lock()
        self.warehouse_id = engine.url.render_as_string(hide_password=True)
        self.reader = _sqlite_reader(engine) if self.dialect == "sqlite" else engine
        self.decoded = DecodedAnswers()
        _ = self.cache  # open the store now, with the service, not inside the first query

    # -- public -----------------------------------------------------------------------------

    @property
    def cache(self) -> QueryCache | None:
        """The cache store (None when disabled or unreachable)."""
        with self._lock:
            if self._cache is None and self.settings.enabled and self._cache_problem is None:
                try:
                    self._cache = open_cache(self.settings, self.base_dir)
                except CacheUnavailable as exc:
                    self._cache_problem = str(exc)
                    log.warning("%s; answering without the cache", exc)
        return self._cache

    def run_sql(self, sql: str, use_cache: bool = True) -> QueryResult:
        """Run one read-only statement given as text (checked first; see performance.sqlguard)."""
        start = time.perf_counter()
        checked = check_read_only(sql)
        with self.read_only() as (conn, version):
            uncacheable = checked.uncacheable
            if uncacheable is None and use_cache and self.settings.enabled:
                uncacheable = unversioned_table(checked, self._tables(conn))
            result = self._answer(conn, version, checked.text, None, {"sql": checked.normalized}, use_cache, uncacheable)
        return self._finish(result, start)

    def run_named(self, name: str, params: dict[str, str] | None = None, use_cache: bool = True) -> QueryResult:
        """Run a standard query by name with `name=value` parameters (defaults for the rest)."""
        start = time.perf_counter()
        query = get_query(name)
        values = query.parse_params(params)
        with self.read_only() as (conn, version):
            if values.get("month") == "latest":
                values["month"] = self._scalar(conn, LATEST_MONTH_SQL) or 0
            form, sql = self.named_sql(query, version.aggregates)
            parts = {"named": name, "sql": sql, "params": values}
            result = self._answer(conn, version, sql, bind(values), parts, use_cache, None)
        result.name, result.form, result.params = name, form, values
        return self._finish(result, start)

    def run_queries(self, queries: list[tuple[NamedQuery, dict[str, Any]]], use_cache: bool = True) -> list[QueryResult]:
        """Run queries the platform defines (never user text) with bound parameters, all in one
        read-only snapshot (one data version), each answered from the cache when it can be.
        Every result's elapsed_ms is the time of the whole call."""
        start = time.perf_counter()
        results = []
        with self.read_only() as (conn, version):
            for query, params in queries:
                form, sql = self.named_sql(query, version.aggregates)
                parts = {"named": query.name, "sql": sql, "params": params}
                result = self._answer(conn, version, sql, params, parts, use_cache, None)
                result.name, result.form, result.params = query.name, form, dict(params)
                results.append(result)
        return [self._finish(result, start) for result in results]

    def named_sql(self, query: NamedQuery, aggregates: bool) -> tuple[str, str]:
        """(form, SQL) of a standard query on this warehouse."""
        return query.sql(self.dialect, aggregates and self.settings.use_aggregates)

    @contextmanager
    def read_only(self) -> Iterator[tuple[Connection, DataVersion]]:
        """A connection inside a read-only transaction with the statement timeout, and the data
        version read in that transaction's snapshot; rolled back at the end."""
        try:
            conn = self.reader.connect()
        except SQLAlchemyError as exc:
            raise _connect_error(self.engine, exc) from None
        try:
            try:
                version = self._begin(conn)
                yield conn, version
            finally:
                self._end(conn)
        except DBAPIError as exc:
            raise self._query_error(exc) from None
        finally:
            conn.close()

    def _begin(self, conn: Connection) -> DataVersion:
        timeout_ms = max(1, round(self.settings.statement_timeout_s * 1000))
        if self.dialect == "postgresql":
            # One round trip: the driver's own BEGIN is off (AUTOCOMMIT), the transaction is ours.
            conn.execution_options(isolation_level="AUTOCOMMIT")
            sql = (
                f"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {timeout_ms}; {_VERSION_SQL['postgresql']}"
            )
        else:
            conn.exec_driver_sql("BEGIN")
            deadline = time.monotonic() + timeout_ms / 1000
            conn.connection.dbapi_connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 20_000)
            sql = _VERSION_SQL["sqlite"]
        try:
            runs, last, finished, live, aggs = conn.exec_driver_sql(sql).one()
        except DBAPIError as exc:
            if _missing_table(exc):
                raise QueryError(NO_WAREHOUSE) from None
            raise
        return DataVersion(f"{last}.{runs}.{finished}.{live or 0}", bool(aggs))

    def _end(self, conn: Connection) -> None:
        if conn.invalidated or conn.closed:
            return
        if self.dialect == "postgresql":
            conn.exec_driver_sql("ROLLBACK")
        else:
            conn.connection.dbapi_connection.set_progress_handler(None, 0)
            conn.rollback()

    def data_version(self) -> DataVersion:
        """The warehouse's data version: changes with every load, replay, rollback (any ledger change)."""
        with self.read_only() as (_conn, version):
            return version

    # -- internals --------------------------------------------------------------------------

    def _answer(
        self, conn: Connection, version: DataVersion, sql: str, params: dict | None, parts: dict, use_cache: bool, uncacheable: str | None
    ) -> QueryResult:
        cache = self.cache if use_cache and uncacheable is None else None
        key = cache_key(warehouse=self.warehouse_id, version=version.token, **parts) if cache else ""
        status, note = self._status(use_cache, uncacheable)
        if cache is not None:
            try:
                blob = cache.get(key)
            except CacheUnavailable as exc:
                blob, cache, status, note = None, None, "unavailable", str(exc)
                log.warning("%s; answering without the cache", exc)
            if blob is not None:  # decoded after the transaction ends (see _finish)
                return QueryResult([], [], "hit", 0.0, version.token, blob=blob, key=key)
        columns, rows = self._execute(conn, sql, params)
        if cache is not None:
            self._store(cache, key, columns, rows)
        return QueryResult(columns, rows, status, 0.0, version.token, note=note)

    def _status(self, use_cache: bool, uncacheable: str | None) -> tuple[str, str | None]:
        if not use_cache:
            return "off", "--no-cache"
        if not self.settings.enabled:
            return "off", "cache.enabled is false"
        if uncacheable:
            return "uncacheable", f"not cached: {uncacheable}"
        if self.cache is None:
            return "unavailable", self._cache_problem
        return "miss", None

    def _execute(self, conn: Connection, sql: str, params: dict | None) -> tuple[list[str], list[tuple]]:
        result = run_statement(conn, sql, params)
        if not result.returns_rows:
            return [], []
        limit = self.settings.max_rows
        rows = [tuple(r) for r in result.fetchmany(limit + 1)]
        result.close()
        if len(rows) > limit:
            raise QueryError(f"the query returns more than {limit:,} rows (cache.max_rows); add LIMIT or aggregate")
        return list(result.keys()), rows

    def _store(self, cache: QueryCache, key: str, columns: list[str], rows: list[tuple]) -> None:
        blob = encode_result(columns, rows)
        if len(blob) > self.settings.max_entry_bytes:
            log.info("answer of %s bytes not cached (cache.max_entry_bytes %s)", len(blob), self.settings.max_entry_bytes)
            return
        try:
            cache.put(key, blob)
        except CacheUnavailable as exc:
            log.warning("%s; the answer was not cached", exc)

    def _tables(self, conn: Connection) -> set[str]:
        """Tables and views the statement could name (search path on PostgreSQL), lower-cased."""
        sql = _TABLES_SQL[self.dialect]
        return {name.lower() for (name,) in conn.exec_driver_sql(sql)}

    def _scalar(self, conn: Connection, sql: str) -> Any:
        return conn.exec_driver_sql(sql).scalar()

    def _finish(self, result: QueryResult, start: float) -> QueryResult:
        if result.blob is not None:
            result.columns, result.rows = self.decoded.decode(result.key, result.blob)
            result.blob = None
        result.elapsed_ms = (time.perf_counter() - start) * 1000
        return result

    def _query_error(self, exc: DBAPIError) -> PlatformError:
        orig = getattr(exc, "orig", None)
        detail = (str(orig or exc).strip().splitlines() or [type(exc).__name__])[0]
        code = getattr(orig, "pgcode", None)
        lowered = detail.lower()
        if code == "25006" or "readonly database" in lowered or "read-only" in lowered:
            return QueryRefused(f"query refused: the statement tried to change data ({detail}); `query` runs in a read-only transaction")
        if code == "57014" or (self.dialect == "sqlite" and "interrupted" in lowered):
            return QueryError(
                f"query cancelled: it ran longer than the statement timeout of {self.settings.statement_timeout_s:g} s "
                "(cache.statement_timeout_s); narrow it or raise the timeout"
            )
        if _missing_table(exc) and "etl_runs" in lowered:
            return QueryError(NO_WAREHOUSE)
        if getattr(exc, "connection_invalidated", False) or (code is None and self.dialect == "postgresql"):
            return describe(self.engine, exc)  # the connection failed, not the query
        return QueryError(f"query failed: {detail}")

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if self.reader is not self.engine:
            self.reader.dispose()


def run_statement(conn: Connection, sql: str, params: dict | None) -> CursorResult:
    """Execute `sql`: ad-hoc text (params None) as it is, so a '%' or ':x' in it stays literal;
    the standard queries' text with bound parameters."""
    if params is None:
        return conn.execution_options(no_parameters=True).exec_driver_sql(sql)
    return conn.execute(text(sql), params)


def _missing_table(exc: DBAPIError) -> bool:
    lowered = str(getattr(exc, "orig", exc)).lower()
    return "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered)


def _connect_error(engine: Engine, exc: SQLAlchemyError) -> Exception:
    if engine.dialect.name == "sqlite" and "unable to open database file" in str(exc):
        path = Path(engine.url.database)
        return QueryError(path_problem(path, creating=False) or f"warehouse file {path}: unable to open it; check its permissions")
    return describe(engine, exc)


def _sqlite_reader(engine: Engine) -> Engine:
    """A second engine on the same SQLite file, opened read-only (mode=ro): writes fail in SQLite itself."""
    path = engine.url.database or ""
    if not path or path == ":memory:":
        raise QueryError("query needs a warehouse file; an in-memory SQLite database has no data to query")
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        # isolation_level=None: the service issues BEGIN itself, so the data version and the
        # answer are read in one snapshot. Readers wait for a writer only at a WAL checkpoint.
        return sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False, isolation_level=None)

    return create_engine("sqlite://", creator=connect, poolclass=NullPool)
