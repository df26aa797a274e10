"""Rollback of data versions (`versions rollback`).

`rollback(N)` undoes version N and every later load or replay, newest first, in ONE
transaction: its facts and quarantined rows are removed, the dimension rows it created are
removed, the values it overwrote (SCD1 products) or the versions it expired or extended (SCD2
customers) are restored from the history tables the loader keeps, and facts of the customers
it touched are pointed back at the versions valid at their times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, bindparam, text
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from database.aggregates import dates_of_customers
from database.aggregates import refresh as refresh_aggregates
from database.errors import describe
from database.locks import warehouse_lock
from etl import ledger
from metadata.versions import get_version
from utils.errors import PlatformError

_UNDOABLE = ("load", "replay")


@dataclass
class RollbackResult:
    """What a rollback removed and restored, per undone version."""

    rollback_run_id: int
    versions: list[int]
    dry_run: bool
    changes: dict[int, dict[str, int]] = field(default_factory=dict)
    duration_s: float = 0.0

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for per_version in self.changes.values():
            for key, n in per_version.items():
                out[key] = out.get(key, 0) + n
        return out


def rollback(
    engine: Engine, settings: Settings, version: int, dry_run: bool = False, on_wait: Callable[[], None] | None = None
) -> RollbackResult:
    """Undo `version` and every later load/replay in one transaction (a new 'rollback' version)."""
    try:
        with warehouse_lock(engine, settings.database.lock_timeout_s, on_wait):
            ledger.close_stale_runs(engine)
            targets = _targets(engine, version)
            return _rollback_locked(engine, version, targets, dry_run, settings.database.lock_timeout_s)
    except SQLAlchemyError as exc:
        raise describe(engine, exc) from None


def _targets(engine: Engine, version: int) -> list[int]:
    row = get_version(engine, version)
    if row["kind"] not in _UNDOABLE:
        raise PlatformError(f"version {version} is a {row['kind']}; roll back to the load before it instead")
    if row["status"] == "rolled_back":
        raise PlatformError(f"nothing to roll back: version {version} was already rolled back by run {row['rolled_back_by']}")
    with engine.connect() as conn:
        return [
            r
            for (r,) in conn.execute(
                text(
                    "SELECT run_id FROM etl_runs WHERE run_id >= :v AND status = 'success' AND kind IN ('load', 'replay') ORDER BY run_id DESC"
                ),
                {"v": version},
            )
        ]


def _rollback_locked(engine: Engine, version: int, targets: list[int], dry_run: bool, lock_timeout_s: float) -> RollbackResult:
    run_id = ledger.open_run(engine, "rollback", f"versions {', '.join(map(str, sorted(targets)))}", None, None, kind="rollback")
    wall = time.perf_counter()
    result = RollbackResult(run_id, targets, dry_run)

    def work(conn: Connection) -> tuple[dict, str]:
        for target in targets:
            result.changes[target] = undo_run(conn, target)
            conn.execute(
                text("UPDATE etl_runs SET status = 'rolled_back', rolled_back_by = :r WHERE run_id = :t"), {"r": run_id, "t": target}
            )
        result.duration_s = time.perf_counter() - wall
        counts = {"dimension_changes": {str(k): v for k, v in result.changes.items()}}
        return counts, f"rolled back version {version}" + (f" and {len(targets) - 1} later" if len(targets) > 1 else "")

    ledger.run_in_transaction(engine, run_id, ledger.utcnow(), dry_run, work, lock_timeout_s)
    return result


def undo_run(conn: Connection, run: int) -> dict[str, int]:
    """Remove what load `run` added and restore what it changed (inside the caller's transaction)."""

    def run_sql(sql: str, **params: object) -> int:
        return conn.execute(text(sql), {"run": run, **params}).rowcount

    touched = [
        tuple(r)
        for r in conn.execute(
            text(
                "SELECT customer_key, customer_id FROM dim_customers WHERE customer_id IN (SELECT c.customer_id FROM dim_customers c "
                "JOIN dim_customers_history h ON h.customer_key = c.customer_key WHERE h.run_id = :run)"
            ),
            {"run": run},
        )
    ]
    dates = {d for (d,) in conn.execute(text("SELECT DISTINCT date_key FROM fact_sales WHERE run_id = :run"), {"run": run})}
    dates |= dates_of_customers(conn, [k for k, _ in touched])
    changes = {
        "facts_removed": run_sql("DELETE FROM fact_sales WHERE run_id = :run"),
        "quarantine_removed": run_sql("DELETE FROM etl_quarantine WHERE run_id = :run"),
        "customer_versions_removed": run_sql("DELETE FROM dim_customers WHERE created_run_id = :run"),
    }
    changes["customer_versions_restored"] = _restore(
        conn,
        run,
        "dim_customers_history",
        "dim_customers",
        "customer_key",
        ["effective_date", "expiry_date", "is_current", "expired_run_id"],
    )
    changes["products_restored"] = _restore(
        conn,
        run,
        "dim_products_history",
        "dim_products",
        "product_key",
        ["description", "current_unit_price", "price_as_of", "category", "is_merchandise", "updated_run_id"],
    )
    changes["products_removed"] = run_sql("DELETE FROM dim_products WHERE created_run_id = :run")
    changes["dates_removed"] = run_sql("DELETE FROM dim_date WHERE created_run_id = :run")
    changes["facts_repointed"] = _repoint(conn, touched)
    changes["quarantine_restored"] = _unreplay(conn, run)
    changes["aggregate_dates_refreshed"] = refresh_aggregates(conn, dates)
    return changes


def _unreplay(conn: Connection, run: int) -> int:
    """Put rows a replay loaded back into the quarantine, as they were."""
    cols = "quarantine_id, run_id, line_id, source_row, reasons, invoice_no, stock_code, description, quantity, invoice_date, unit_price, customer_id, country, raw_line, quarantined_at"
    restored = conn.execute(
        text(f"INSERT INTO etl_quarantine ({cols}) SELECT {cols} FROM etl_quarantine_replayed WHERE replay_run_id = :run"), {"run": run}
    ).rowcount
    conn.execute(text("DELETE FROM etl_quarantine_replayed WHERE replay_run_id = :run"), {"run": run})
    return restored


def _restore(conn: Connection, run: int, history: str, table: str, key: str, columns: list[str]) -> int:
    """Write back the values saved before `run` first changed each row (set-based)."""
    first = f"SELECT {{col}} FROM {history} h WHERE h.run_id = :run AND h.{key} = {table}.{key} ORDER BY h.history_id LIMIT 1"
    assignments = ", ".join(f"{c} = ({first.format(col='h.' + c)})" for c in columns)
    restored = conn.execute(
        text(f"UPDATE {table} SET {assignments} WHERE {key} IN (SELECT {key} FROM {history} WHERE run_id = :run)"), {"run": run}
    ).rowcount
    conn.execute(text(f"DELETE FROM {history} WHERE run_id = :run"), {"run": run})
    return restored


def _repoint(conn: Connection, touched: list[tuple[int, str]]) -> int:
    """Point facts of the given customers at the versions valid at their transaction times."""
    by_customer: dict[str, list[int]] = {}
    for key, customer_id in touched:
        by_customer.setdefault(customer_id, []).append(key)
    sql = text(
        "UPDATE fact_sales SET customer_key = (SELECT c.customer_key FROM dim_customers c WHERE c.customer_id = :customer_id "
        "AND c.effective_date <= fact_sales.transaction_datetime AND (c.expiry_date IS NULL OR fact_sales.transaction_datetime < c.expiry_date)) "
        "WHERE customer_key IN :keys"
    ).bindparams(bindparam("keys", expanding=True))
    return sum(conn.execute(sql, {"customer_id": cid, "keys": keys}).rowcount for cid, keys in by_customer.items())
