"""Data versions: every successful load, replay and rollback is a version. Reading them (list,
show, diff) needs only SQL; undoing them is `metadata.rollback`, which loads the aggregates' refresh
and the run ledger, so `versions list` and `show` start without them.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, Engine, text

from utils.errors import PlatformError

VERSION_KINDS = ("load", "replay", "rollback")


def list_versions(engine: Engine, limit: int = 50) -> list[dict]:
    """Versions newest first: successful loads, replays and rollbacks (and those rolled back)."""
    sql = text(
        "SELECT run_id, kind, job_name, status, started_at, finished_at, rows_loaded, rows_quarantined, source, rolled_back_by, message "
        "FROM etl_runs WHERE status IN ('success', 'rolled_back') ORDER BY run_id DESC LIMIT :limit"
    )
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sql, {"limit": limit})]


def get_version(engine: Engine, version: int) -> dict:
    """One version with what it changed per table; PlatformError if there is no such version."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM etl_runs WHERE run_id = :v"), {"v": version}).first()
        if row is None or row._mapping["status"] not in ("success", "rolled_back"):
            raise PlatformError(f"version {version} not found: only successful runs are versions; see python main.py versions list")
        data = dict(row._mapping)
        for key in ("quarantine_by_reason", "dimension_changes"):
            data[key] = json.loads(data[key]) if data.get(key) else {}
        data["tables"] = _changes_by_table(conn, version)
    return data


def _changes_by_table(conn: Connection, version: int) -> dict[str, dict[str, int]]:
    def count(sql: str) -> int:
        return int(conn.execute(text(sql), {"v": version}).scalar_one())

    return {
        "fact_sales": {"inserted": count("SELECT COUNT(*) FROM fact_sales WHERE run_id = :v")},
        "etl_quarantine": {"inserted": count("SELECT COUNT(*) FROM etl_quarantine WHERE run_id = :v")},
        "dim_customers": {
            "inserted": count("SELECT COUNT(*) FROM dim_customers WHERE created_run_id = :v"),
            "changed": count("SELECT COUNT(DISTINCT customer_key) FROM dim_customers_history WHERE run_id = :v"),
        },
        "dim_products": {
            "inserted": count("SELECT COUNT(*) FROM dim_products WHERE created_run_id = :v"),
            "updated": count("SELECT COUNT(DISTINCT product_key) FROM dim_products_history WHERE run_id = :v"),
        },
        "dim_date": {"inserted": count("SELECT COUNT(*) FROM dim_date WHERE created_run_id = :v")},
    }


def diff_versions(engine: Engine, a: int, b: int) -> dict:
    """Row counts and key metrics of the warehouse as of version a and as of version b."""
    for v in (a, b):
        get_version(engine, v)
    with engine.connect() as conn:
        return {"a": a, "b": b, "as_of_a": _state_as_of(conn, a), "as_of_b": _state_as_of(conn, b)}


def _state_as_of(conn: Connection, version: int) -> dict[str, object]:
    live = "run_id <= :v AND run_id IN (SELECT run_id FROM etl_runs WHERE status = 'success')"
    facts = conn.execute(
        text(f"SELECT COUNT(*), SUM(line_total), SUM(quantity), COUNT(DISTINCT invoice_no) FROM fact_sales WHERE {live}"), {"v": version}
    ).one()
    created = "created_run_id <= :v AND created_run_id IN (SELECT run_id FROM etl_runs WHERE status = 'success')"

    def count(sql: str) -> int:
        return int(conn.execute(text(sql), {"v": version}).scalar_one())

    return {
        "fact_rows": int(facts[0]),
        "revenue": round(float(facts[1] or 0), 2),
        "units": int(facts[2] or 0),
        "invoices": int(facts[3]),
        "quarantined_rows": count(f"SELECT COUNT(*) FROM etl_quarantine WHERE {live}"),
        "customer_versions": count(f"SELECT COUNT(*) FROM dim_customers WHERE {created}"),
        "products": count(f"SELECT COUNT(*) FROM dim_products WHERE {created}"),
        "dates": count(f"SELECT COUNT(*) FROM dim_date WHERE {created}"),
    }
