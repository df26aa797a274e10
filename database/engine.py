"""One engine factory: pooled PostgreSQL, or an SQLite file in WAL mode with foreign keys on."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import NullPool

from config.settings import PROJECT_ROOT, DatabaseSettings
from utils.errors import ConfigError, DatabaseError
from utils.urls import mask_url

DEFAULT_SQLITE_FILE = PROJECT_ROOT / "data" / "warehouse.db"  # the one warehouse whose missing folder is made


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


def _open_existing(path: str):
    """Connect to the SQLite file only if it exists (mode=rw): a command that reads never creates
    a warehouse, not even an empty file at a mistyped path. create_sqlite_file makes a new one."""

    def do_connect(_dialect, _record, cargs: list, cparams: dict) -> None:
        cargs[:] = [f"file:{quote(path)}?mode=rw"]
        cparams["uri"] = True

    return do_connect


def sqlite_file(engine: Engine) -> Path | None:
    """The SQLite warehouse file of `engine` (None for PostgreSQL or an in-memory database)."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    return Path(path) if path and path != ":memory:" else None


def path_problem(path: Path, creating: bool) -> str | None:
    """What stands in the way of opening (or, `creating`, of creating) the SQLite warehouse at
    `path`, said so that a user can act on it; None when nothing visible does."""
    folder = path.parent
    blocker = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return f"warehouse file {path}: {blocker} is a file, not a folder; fix --database-url / RDP_DATABASE_URL"
    if not folder.is_dir():
        if creating:
            return (
                f"warehouse file {path}: the folder {folder} does not exist; create it first (mkdir -p {folder}) "
                "or fix --database-url / RDP_DATABASE_URL"
            )
        return f"the warehouse file {path} does not exist (nor its folder {folder}); check --database-url / RDP_DATABASE_URL"
    if path.is_dir():
        return f"warehouse file {path} is a folder; name a file in it, e.g. {path / 'warehouse.db'}"
    if not path.exists() and not creating:
        return f"the warehouse file {path} does not exist; load data first: python main.py etl --source FILE"
    return None


def os_problem(path: Path, exc: OSError) -> str:
    """One line for an OS error on the warehouse path: the path and the cause."""
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return f"warehouse file {path}: {exc.strerror or exc}{where}"


def prepare_sqlite_folder(engine: Engine) -> None:
    """Before a command creates the SQLite warehouse (or its lock file beside it): the folder must
    exist. Only the default location's folder (data/ in the project) is made; a missing folder of
    any other path is an error saying how to create it, so a typo does not grow folders."""
    path = sqlite_file(engine)
    if path is None:
        return
    try:
        if path == DEFAULT_SQLITE_FILE and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(os_problem(path, exc)) from None
    problem = path_problem(path, creating=True)
    if problem:
        raise DatabaseError(problem)


def create_sqlite_file(engine: Engine) -> None:
    """Create the SQLite warehouse file if it does not exist yet (see prepare_sqlite_folder)."""
    path = sqlite_file(engine)
    if path is None or path.is_file():
        return
    prepare_sqlite_folder(engine)
    try:
        sqlite3.connect(path).close()
    except sqlite3.Error as exc:
        raise DatabaseError(f"warehouse file {path}: cannot create it ({exc}); check the folder's permissions") from None


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the warehouse engine from the database settings."""
    url = resolve_url(settings.url)
    backend = make_url(url).get_backend_name()
    try:
        if backend == "sqlite":
            path = make_url(url).database
            engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": settings.sqlite_busy_timeout_s})
            if path and path != ":memory:":
                event.listen(engine, "do_connect", _open_existing(path))
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
