"""Checks of ad-hoc SQL before `query` runs it: one read-only statement, and whether its answer
may be cached.

The database enforces read-only too (a READ ONLY transaction on PostgreSQL, a read-only
connection on SQLite); these checks refuse early with a clear message, and close the gaps a
read-only transaction leaves: a second statement after a `;` (PostgreSQL runs every statement
of a simple query, so `SELECT 1; COMMIT; DROP …` would escape the transaction), COPY … TO
PROGRAM, row locks (FOR SHARE/UPDATE), server functions that act outside the transaction
(advisory locks, ending other sessions, reading server files, changing session settings,
resetting statistics), functions that run SQL text of their own (query_to_xml …), and the
catalogs that hold password hashes or user-mapping passwords (pg_authid, pg_shadow,
pg_user_mapping(s)).
"""

from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass

import sqlparse
from sqlparse import tokens as T

from utils.errors import PlatformError

READ_ONLY_KINDS = ("SELECT", "WITH", "VALUES", "TABLE", "EXPLAIN")
_RULE = "`query` runs one read-only statement (SELECT, WITH, VALUES, TABLE or EXPLAIN)"

# Server functions with effects outside the transaction, refused by name (PostgreSQL, SQLite).
DENIED_FUNCTIONS = frozenset(
    {
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_read_file",
        "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_file_write", "pg_promote", "pg_switch_wal",
        "pg_create_restore_point", "pg_notify", "set_config", "pg_logical_emit_message", "pg_backup_start",
        "pg_backup_stop", "pg_start_backup", "pg_stop_backup", "pg_log_backend_memory_contexts", "load_extension",
        "pg_create_logical_replication_slot", "pg_create_physical_replication_slot", "pg_drop_replication_slot",
        "lowrite", "loread", "pg_logdir_ls", "pg_import_system_collations", "pg_current_logfile",
        "pg_ls_logdir", "pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir",
    }
)  # fmt: skip
# Functions that run SQL text of their own, which these checks never see.
SQL_TEXT_FUNCTIONS = frozenset({"query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema"})
DENIED_PREFIXES = (
    "pg_advisory", "pg_try_advisory", "dblink", "lo_", "pg_stat_reset", "pg_file_", "pg_replication_origin", "pg_wal_replay",
)  # fmt: skip
# Catalogs holding password hashes or the options (passwords) of foreign-server user mappings.
DENIED_RELATIONS = frozenset({"pg_authid", "pg_shadow", "pg_user_mapping", "pg_user_mappings"})

# What makes an answer change without a new data version.
VOLATILE_FUNCTIONS = frozenset(
    {
        "now", "random", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday", "gen_random_uuid",
        "uuid_generate_v4", "txid_current", "setseed", "randomblob", "changes", "total_changes", "last_insert_rowid",
        "pg_sleep", "current_setting", "inet_client_addr", "pg_backend_pid",
    }
)  # fmt: skip
VOLATILE_KEYWORDS = frozenset(
    {"CURRENT_DATE", "CURRENT_TIME", "CURRENT_TIMESTAMP", "LOCALTIME", "LOCALTIMESTAMP", "CURRENT_USER", "SESSION_USER", "USER"}
)
VOLATILE_LITERALS = frozenset({"'now'", "'today'", "'tomorrow'", "'yesterday'"})
# Words that begin the other statements of PostgreSQL and SQLite (all refused). A first word that
# is none of these nor a read-only kind is a syntax error (a typo such as SELEC), not a write.
STATEMENT_WORDS = frozenset(
    {
        "ABORT", "ALTER", "ANALYZE", "ANALYSE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT", "CLOSE", "CLUSTER", "COMMENT",
        "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DECLARE", "DELETE", "DETACH", "DISCARD", "DO", "DROP", "END",
        "EXECUTE", "FETCH", "GRANT", "IMPORT", "INSERT", "LISTEN", "LOAD", "LOCK", "MERGE", "MOVE", "NOTIFY", "PRAGMA",
        "PREPARE", "REASSIGN", "REFRESH", "REINDEX", "RELEASE", "REPLACE", "RESET", "REVOKE", "ROLLBACK", "SAVEPOINT",
        "SECURITY", "SET", "SHOW", "START", "TRUNCATE", "UNLISTEN", "UPDATE", "UPSERT", "VACUUM",
    }
)  # fmt: skip
SYSTEM_PREFIXES = ("pg_", "sqlite_", "information_schema")
# Tables that change only in a ledgered run (load, replay, rollback): the data version covers them.
VERSIONED_PREFIXES = ("fact_sales", "dim_", "agg_")
VERSIONED_TABLES = frozenset({"etl_runs", "etl_quarantine", "etl_quarantine_replayed"})


class QueryError(PlatformError):
    """A query failed in the warehouse (syntax, missing table, timeout, too many rows)."""


class QueryRefused(QueryError):
    """A query was refused before or while running: it is not one read-only statement."""


@dataclass(frozen=True)
class CheckedSql:
    """A statement that passed the checks."""

    text: str
    normalized: str
    uncacheable: str | None  # why its answer must not be cached (from the text alone), or None
    names: frozenset[str]  # identifiers, lower-cased


def refuse(what: str) -> QueryRefused:
    return QueryRefused(f"query refused: {what}; {_RULE}")


def check_read_only(sql: str) -> CheckedSql:
    """The statement of `sql` if it is one read-only statement, else QueryRefused."""
    statements = [s for s in sqlparse.parse(sql) if _meaningful(s.flatten())]
    if not statements:
        raise refuse("the SQL text is empty")
    if len(statements) > 1:
        raise refuse(f"the text holds {len(statements)} statements")
    tokens = [t for t in statements[0].flatten() if not t.is_whitespace and t.ttype not in T.Comment]
    while tokens and tokens[-1].match(T.Punctuation, ";"):
        tokens.pop()
    body = str(statements[0]).strip().rstrip(";").rstrip()
    if ";" in body:
        raise refuse("';' may only end the statement, also inside strings and comments (write chr(59))")
    _check_kind(tokens)
    _check_functions(tokens)
    normalized = " ".join(_normal(t) for t in tokens)
    return CheckedSql(body, normalized, _volatility(tokens), _names(tokens))


def _normal(token) -> str:
    """Keywords upper-cased, unquoted names lower-cased (both databases fold them), the rest as written."""
    if token.ttype in T.Keyword:
        return token.normalized
    return token.value.lower() if token.ttype in T.Name else token.value


def _meaningful(tokens) -> bool:
    return any(not t.is_whitespace and t.ttype not in T.Comment and not t.match(T.Punctuation, ";") for t in tokens)


def _check_kind(tokens: list) -> None:
    first = next((t.value.upper() for t in tokens if t.ttype not in T.Punctuation), "")
    words = {t.normalized for t in tokens if t.ttype in T.Keyword}
    if first == "COPY" or "COPY" in words:
        raise refuse("COPY reads and writes server files and programs (use --format csv to export an answer)")
    if first not in READ_ONLY_KINDS and first not in STATEMENT_WORDS:
        raise QueryError(
            f"query failed: syntax error: {first or 'the text'} does not begin an SQL statement{_did_you_mean(first)}; {_RULE}"
        )
    if first not in READ_ONLY_KINDS:
        raise refuse(f"{first} statements change the warehouse or its settings")
    for t in tokens:
        if (t.ttype in T.DML and t.normalized != "SELECT") or t.ttype in T.DDL:
            raise refuse(f"{t.normalized} statements change the warehouse")
    if "INTO" in words:
        raise refuse("SELECT … INTO creates a table")
    if any(t.normalized == "FOR" and nxt.normalized in ("SHARE", "KEY", "NO") for t, nxt in itertools.pairwise(tokens)):
        raise refuse("SELECT … FOR SHARE/UPDATE locks rows")


def _did_you_mean(word: str) -> str:
    close = difflib.get_close_matches(word, READ_ONLY_KINDS, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_functions(tokens: list) -> None:
    for t, nxt in zip(tokens, [*tokens[1:], None], strict=True):
        if t.ttype in T.String.Single or t.ttype in T.Number or t.ttype in T.Punctuation:
            continue
        name = t.value.strip('"').lower()
        called = nxt is not None and nxt.match(T.Punctuation, "(")
        if called and (name in DENIED_FUNCTIONS or name.startswith(DENIED_PREFIXES)):
            raise refuse(f"{name}() acts outside the transaction")
        if called and name in SQL_TEXT_FUNCTIONS:
            raise refuse(f"{name}() runs SQL text of its own, which is not checked")
        if name in DENIED_RELATIONS and t.ttype in (T.Name, T.Keyword, T.String.Symbol):
            raise refuse(f"{name} holds credentials")


def _volatility(tokens: list) -> str | None:
    """Why the answer may change without a new data version, from the text alone (None: no reason)."""
    for t in tokens:
        if t.ttype in T.Keyword and t.normalized in VOLATILE_KEYWORDS:
            return f"it uses {t.normalized}"
        if t.ttype in T.String.Single and t.value.lower() in VOLATILE_LITERALS:
            return f"it uses {t.value}"
        if t.ttype in T.Name or t.ttype in T.String.Symbol or t.ttype in T.Keyword:
            name = t.value.strip('"').lower()
            if name in VOLATILE_FUNCTIONS:
                return f"it uses {name}()"
            if name.startswith(SYSTEM_PREFIXES):
                return f"it reads {name}, a system catalog"
    return None


def _names(tokens: list) -> frozenset[str]:
    """Every identifier of the statement, lower-cased (tables among them)."""
    return frozenset(t.value.strip('"').lower() for t in tokens if t.ttype in T.Name or t.ttype in T.String.Symbol or t.ttype in T.Keyword)


def is_versioned(table: str) -> bool:
    """Whether a table changes only in ledgered runs (so the data version covers it)."""
    return table in VERSIONED_TABLES or table.startswith(VERSIONED_PREFIXES)


def unversioned_table(checked: CheckedSql, tables: set[str]) -> str | None:
    """Why the answer must not be cached: a table of the warehouse it names that changes outside runs."""
    for name in sorted(checked.names & tables):
        if not is_versioned(name):
            return f"it reads {name}, which changes outside loads"
    return None
