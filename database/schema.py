"""Schema set-up (idempotent) and health checks of the warehouse."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from config.settings import WarehouseSettings
from database.aggregates import AGGREGATE_TABLES, refresh
from database.citus import distribute, require_citus
from database.engine import create_sqlite_file, path_problem, sqlite_file
from database.errors import describe
from database.models import UNKNOWN_CUSTOMER_KEY, current_version_only_on_postgresql, dim_customers
from database.partitions import create_partitioned_fact
from database.tables import METADATA
from utils.errors import DatabaseError
from utils.urls import mask_url

UNKNOWN_SINCE = datetime(1900, 1, 1)


@dataclass(frozen=True)
class SetupResult:
    """What `setup` did."""

    created_tables: list[str]
    existing_tables: list[str]
    unknown_customer_created: bool
    citus_statements: list[str] | None = None  # run by a set-up with warehouse.distributed: citus


@dataclass(frozen=True)
class HealthReport:
    """What `test` found."""

    backend: str
    server_version: str
    url: str
    missing_tables: list[str]
    writable: bool


def missing_tables(engine: Engine) -> list[str]:
    """Warehouse tables that do not exist yet."""
    return _missing_tables(_existing(engine))


def missing_columns(engine_or_conn) -> list[tuple[str, str]]:
    """(table, column) of nullable columns a newer version added to tables that already exist."""
    return _missing_columns(_table_columns(engine_or_conn))


def ensure_schema(engine: Engine, warehouse: WarehouseSettings | None = None) -> None:
    """The warehouse as this version needs it, checked with one query: every table created (with
    `setup_schema`) when any is missing, else the columns a newer version added to older tables."""
    existing = _existing(engine)
    if _missing_tables(existing):
        setup_schema(engine, warehouse)
    else:
        _upgrade(engine, existing)


def upgrade_schema(engine: Engine) -> None:
    """A warehouse made by an older version gains the nullable columns of `missing_columns` (their
    rows keep NULL, which every reader accepts). Creates no table: for commands that only read."""
    _upgrade(engine, _existing(engine))


def _upgrade(engine: Engine, existing: dict[str, set[str]]) -> None:
    if _missing_columns(existing):
        with engine.begin() as conn:
            _add_missing_columns(conn)


def _existing(engine: Engine) -> dict[str, set[str]]:
    path = sqlite_file(engine)
    if path is not None and not path.is_file():
        return {}  # no warehouse file yet: nothing to look into (and nothing created)
    return _table_columns(engine)


def _missing_tables(existing: dict[str, set[str]]) -> list[str]:
    return [t for t in METADATA.tables if t not in existing]


def _missing_columns(existing: dict[str, set[str]]) -> list[tuple[str, str]]:
    return [
        (table.name, c.name)
        for table in METADATA.sorted_tables
        if table.name in existing
        for c in table.columns
        if c.name not in existing[table.name] and c.nullable
    ]


# Every table of the default schema with its columns, in one query (each run checks them; the
# inspector asked once per table).
_TABLE_COLUMNS = {
    "sqlite": "SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p WHERE m.type = 'table'",
    "postgresql": (
        "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"
    ),
}


def _table_columns(engine_or_conn) -> dict[str, set[str]]:
    """{table: its column names} of the default schema (the tables the inspector's get_table_names lists)."""
    sql = _TABLE_COLUMNS.get(engine_or_conn.dialect.name)
    if sql is None:
        inspector = inspect(engine_or_conn)
        return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}
    if isinstance(engine_or_conn, Engine):
        with engine_or_conn.connect() as conn:
            rows = conn.execute(text(sql)).all()
    else:
        rows = engine_or_conn.execute(text(sql)).all()
    found: dict[str, set[str]] = {}
    for table, column in rows:
        found.setdefault(table, set()).add(column)
    return found


def _add_missing_columns(conn) -> None:
    """Add the nullable columns of `missing_columns` (create_all never alters an existing table).
    Two processes may find the same column missing: one adds it, the other's ALTER fails (a
    savepoint keeps the caller's transaction) and finds it there."""
    for table, column in missing_columns(conn):
        kind = METADATA.tables[table].columns[column].type.compile(dialect=conn.dialect)
        try:
            with conn.begin_nested():
                conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))
        except SQLAlchemyError:
            if (table, column) in missing_columns(conn):
                raise


def setup_schema(engine: Engine, warehouse: WarehouseSettings | None = None) -> SetupResult:
    """Create every missing table and the unknown-customer row; safe to run again. With
    `warehouse.distributed: citus`, first check that the server has Citus (nothing is written when
    it has not), then make the tables Citus tables in the same transaction (database/citus.py)."""
    citus = warehouse is not None and warehouse.distributed == "citus"
    if citus:
        require_citus(engine)  # before anything is created: a refused set-up leaves no file behind
    create_sqlite_file(engine)
    try:
        missing = missing_tables(engine)
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql" and "fact_sales" in missing:
                create_partitioned_fact(conn)
            METADATA.create_all(conn, checkfirst=True)
            _add_missing_columns(conn)
            _create_missing_indexes(conn, missing)
            distributed = distribute(conn, warehouse) if citus else None
            _backfill_aggregates(conn, missing)
            exists = conn.execute(select(dim_customers.c.customer_key).where(dim_customers.c.customer_key == UNKNOWN_CUSTOMER_KEY)).first()
            if exists is None:
                conn.execute(
                    dim_customers.insert().values(
                        customer_key=UNKNOWN_CUSTOMER_KEY,
                        customer_id=None,
                        country="Unknown",
                        effective_date=UNKNOWN_SINCE,
                        expiry_date=None,
                        is_current=True,
                    )
                )
    except SQLAlchemyError as exc:
        raise describe(engine, exc) from None
    existing = [t for t in METADATA.tables if t not in missing]
    return SetupResult(missing, existing, exists is None, distributed)


def _create_missing_indexes(conn, missing: list[str]) -> None:
    """Indexes a newer version added to tables that already existed (create_all skips those tables)."""
    existing = set(inspect(conn).get_table_names())
    current_version_only_on_postgresql(dim_customers, conn)  # create_all's table event does not run here
    for table in METADATA.sorted_tables:
        if table.name in existing and table.name not in missing:
            for index in table.indexes:
                index.create(conn, checkfirst=True)


def _backfill_aggregates(conn, missing: list[str]) -> None:
    """Aggregate tables added to a warehouse that already has facts get every date computed."""
    if "fact_sales" in missing or not any(t in missing for t in AGGREGATE_TABLES):
        return
    dates = [d for (d,) in conn.execute(text("SELECT DISTINCT date_key FROM fact_sales"))]
    if dates:
        refresh(conn, dates)


def server_version(engine: Engine) -> str:
    """The database server's version string."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return "SQLite " + conn.execute(text("select sqlite_version()")).scalar_one()
        return conn.execute(text("show server_version")).scalar_one().split()[0]


def check_health(engine: Engine) -> HealthReport:
    """Connect, report the server version, missing tables, and whether a write succeeds. An SQLite
    warehouse file that does not exist yet is reported, not created: every table missing, writable
    if its folder is."""
    url = mask_url(engine.url.render_as_string(hide_password=False))
    path = sqlite_file(engine)
    if path is not None and not path.is_file():
        problem = path_problem(path, creating=True)
        if problem:
            raise DatabaseError(problem)
        return HealthReport("sqlite", f"SQLite {sqlite3.sqlite_version}", url, missing_tables(engine), os.access(path.parent, os.W_OK))
    try:
        version = server_version(engine)
        missing = missing_tables(engine)
        with engine.connect() as conn:
            trans = conn.begin()
            conn.execute(text("create table rdp_write_probe (x integer)"))
            conn.execute(text("insert into rdp_write_probe values (1)"))
            trans.rollback()
    except SQLAlchemyError as exc:
        raise describe(engine, exc) from None
    return HealthReport(engine.dialect.name, version, url, missing, True)
