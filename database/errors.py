"""Turn driver errors into platform errors with a message a user can act on."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from database.engine import path_problem, sqlite_file
from utils.errors import DatabaseError, TransientDatabaseError
from utils.urls import mask_url

_TRANSIENT_HINTS = (
    "connection refused",
    "could not connect",
    "server closed the connection",
    "terminating connection",
    "timeout expired",
    "database is locked",
    "the database system is starting up",
    "the database system is shutting down",
    "connection to server",
)


def describe(engine: Engine, exc: SQLAlchemyError) -> DatabaseError:
    """A DatabaseError (TransientDatabaseError when a retry may help) naming the warehouse."""
    url = mask_url(engine.url.render_as_string(hide_password=False))
    detail = (
        str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if str(getattr(exc, "orig", None) or exc).strip()
        else type(exc).__name__
    )
    detail = mask_url(detail)
    lowered = detail.lower()
    if "unable to open database file" in lowered and (path := sqlite_file(engine)) is not None:
        return DatabaseError(
            path_problem(path, creating=False) or f"warehouse file {path}: {detail}; check the file's and its folder's permissions"
        )
    if "no such column" in lowered or ("column" in lowered and "does not exist" in lowered):
        return DatabaseError(
            f"warehouse {url}: {detail}; it was made by an older version of the platform: "
            "run python main.py setup to add the new columns (nothing else changes)"
        )
    if "does not exist" in lowered and "database" in lowered:
        return DatabaseError(f"warehouse {url}: {detail}. Create it (createdb) or fix --database-url / RDP_DATABASE_URL")
    if "role" in lowered and "does not exist" in lowered:
        return DatabaseError(f"warehouse {url}: {detail}; fix the user in the database URL or create the role")
    if "password authentication failed" in lowered or "authentication" in lowered:
        return DatabaseError(f"warehouse {url}: authentication failed; check the user and password in the database URL")
    if isinstance(exc, DBAPIError) and exc.connection_invalidated and not any(h in lowered for h in _TRANSIENT_HINTS):
        # the driver's words for a broken connection vary ("invalid socket", "connection already closed")
        return TransientDatabaseError(
            f"warehouse {url}: the connection to the database server was lost ({detail}); is the server running? "
            "Check it and run the command again"
        )
    if isinstance(exc, OperationalError) and any(h in lowered for h in _TRANSIENT_HINTS):
        hint = (
            "another process holds the SQLite file; wait for it or raise database.sqlite_busy_timeout_s"
            if "locked" in lowered
            else "is the server running? Check --database-url / RDP_DATABASE_URL"
        )
        return TransientDatabaseError(f"warehouse {url}: {detail} ({hint})")
    if isinstance(exc, DBAPIError) and "readonly" in lowered.replace(" ", "").replace("-", ""):
        return DatabaseError(f"warehouse {url}: {detail}; the database is read-only, check file permissions")
    return DatabaseError(f"warehouse {url}: {detail}")
