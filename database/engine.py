"""One engine factory: pooled PostgreSQL, or an SQLite file in WAL mode with foreign keys on."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from config.settings import PROJECT_ROOT, DatabaseSettings
from utils.errors import ConfigError
from utils.urls import mask_url


def resolve_url(url: str) -> str:
    """Make a relative SQLite path absolute against the project folder; check the URL parses."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database.url {mask_url(url)!r} is not a database URL; use e.g. sqlite:///data/warehouse.db or postgresql://user@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        if db and db != ":memory:" and not Path(db).is_absolute():
            parsed = parsed.set(database=str(PROJECT_ROOT / db))
        return parsed.render_as_string(hide_password=False)
    if parsed.drivername in ("postgresql", "postgres"):
        # SQLAlchemy 2.1 defaults to psycopg 3; the platform ships psycopg2 (COPY via copy_expert).
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


WRITES = "rdp_writes"  # execution option of a connection whose transaction writes (database.locks.write_transaction)


def _sqlite_begin(conn: Connection) -> None:
    """BEGIN; for a writing transaction BEGIN IMMEDIATE, which takes the file's write lock up front
    (waiting up to the busy timeout). A deferred transaction that reads first and writes later
    fails at once ("database is locked", no waiting) if another process wrote in between: in
    WAL mode its snapshot cannot become a write transaction."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITES) else "BEGIN")


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the warehouse engine from the database settings."""
    url = resolve_url(settings.url)
    backend = make_url(url).get_backend_name()
    try:
        if backend == "sqlite":
            path = make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": settings.sqlite_busy_timeout_s})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
            return engine
        if backend == "postgresql":
            return create_engine(
                url,
                pool_size=settings.pool_size,
                max_overflow=settings.max_overflow,
                pool_timeout=settings.pool_timeout_s,
                pool_pre_ping=settings.pool_pre_ping,
                connect_args={"connect_timeout": settings.connect_timeout_s, "application_name": "retail-data-platform"},
            )
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"database.url {mask_url(url)!r}: driver not available ({exc}); run pip install -r requirements.txt") from None
    raise ConfigError(f"database.url {mask_url(url)!r}: backend '{backend}' is not supported; use sqlite:/// or postgresql://")
