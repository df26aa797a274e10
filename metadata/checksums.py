"""Content checksums of warehouse tables: equal checksums mean equal contents."""

from __future__ import annotations

import hashlib
from decimal import Decimal

from sqlalchemy import Engine, inspect, text

# The ledger is left out: it records history (every rollback adds a run) by design.
DATA_TABLES = (
    "dim_customers", "dim_products", "dim_date", "fact_sales", "etl_quarantine",
    "dim_customers_history", "dim_products_history", "etl_quarantine_replayed",
    "agg_daily_product", "agg_daily_customer", "agg_daily_orders", "agg_monthly_product",
    "agg_monthly_sales", "agg_customer_totals", "agg_product_totals",
)  # fmt: skip


def _canonical(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float | Decimal):
        return format(Decimal(str(value)).normalize(), "f")
    return str(value)


def table_checksum(engine: Engine, table: str) -> str:
    """SHA-256 over all rows of `table` ordered by its primary key, values in a canonical form."""
    pk = inspect(engine).get_pk_constraint(table)["constrained_columns"]
    digest = hashlib.sha256()
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(text(f"SELECT * FROM {table} ORDER BY {', '.join(pk)}"))
        for row in result:
            digest.update("\x1f".join(_canonical(v) for v in row).encode())
            digest.update(b"\n")
    return digest.hexdigest()


def warehouse_checksums(engine: Engine) -> dict[str, str]:
    """Checksums of every warehouse data table."""
    return {table: table_checksum(engine, table) for table in DATA_TABLES}
