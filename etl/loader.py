"""Loading: staging tables filled in bulk, then set-based SQL into the star schema.

All of it runs on the run's one connection inside the run's one transaction. The SQL is the
same on both back ends; only the bulk path into staging differs (COPY vs executemany).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Connection, text

from database.bulk import load_frame
from database.models import SQLITE_TS_FORMAT
from etl.transformation import date_rows, plan_customers

_STG_SALES = """CREATE TEMPORARY TABLE stg_sales (
    line_id BIGINT NOT NULL, source_row BIGINT NOT NULL, invoice_no TEXT NOT NULL, stock_code TEXT NOT NULL,
    description TEXT, quantity BIGINT NOT NULL, unit_price_milli BIGINT NOT NULL, line_total_milli BIGINT NOT NULL,
    transaction_datetime TIMESTAMP NOT NULL, date_key INTEGER NOT NULL, customer_id TEXT, country TEXT NOT NULL,
    transaction_type TEXT NOT NULL, product_category TEXT NOT NULL)"""
_STG_QUARANTINE = """CREATE TEMPORARY TABLE stg_quarantine (
    line_id BIGINT NOT NULL, source_row BIGINT NOT NULL, reasons TEXT NOT NULL, invoice_no TEXT, stock_code TEXT,
    description TEXT, quantity TEXT, invoice_date TEXT, unit_price TEXT, customer_id TEXT, country TEXT, raw_line TEXT)"""

_SALES_COLUMNS = [
    "line_id", "source_row", "invoice_no", "stock_code", "description", "quantity", "unit_price_milli", "line_total_milli",
    "transaction_datetime", "date_key", "customer_id", "country", "transaction_type", "product_category",
]  # fmt: skip
_QUARANTINE_COLUMNS = [
    "line_id",
    "source_row",
    "reasons",
    "invoice_no",
    "stock_code",
    "description",
    "quantity",
    "invoice_date",
    "unit_price",
    "customer_id",
    "country",
    "raw_line",
]

_UPSERT_PRODUCTS = """
INSERT INTO dim_products (stock_code, description, current_unit_price, price_as_of, category, is_merchandise, created_run_id, updated_run_id)
SELECT stock_code, NULLIF(description, ''), unit_price_milli / 1000.0, transaction_datetime, product_category,
       product_category = 'merchandise', :run, :run
FROM stg_products WHERE true
ON CONFLICT (stock_code) DO UPDATE SET
    description = COALESCE(excluded.description, dim_products.description),
    current_unit_price = excluded.current_unit_price,
    price_as_of = excluded.price_as_of,
    category = excluded.category,
    is_merchandise = excluded.is_merchandise,
    updated_run_id = excluded.updated_run_id
WHERE excluded.price_as_of >= dim_products.price_as_of
  AND (COALESCE(excluded.description, dim_products.description, '') <> COALESCE(dim_products.description, '')
       OR excluded.current_unit_price <> dim_products.current_unit_price
       OR excluded.category <> dim_products.category)
"""

_STG_PRODUCTS = """CREATE TEMPORARY TABLE stg_products (
    stock_code TEXT NOT NULL, description TEXT, unit_price_milli BIGINT NOT NULL, transaction_datetime TIMESTAMP NOT NULL,
    product_category TEXT NOT NULL)"""
_PRODUCT_COLUMNS = ["stock_code", "description", "unit_price_milli", "transaction_datetime", "product_category"]

_INSERT_FACTS = """
INSERT INTO fact_sales (line_id, customer_key, product_key, date_key, invoice_no, quantity, unit_price, line_total,
                        transaction_datetime, transaction_type, source_row, run_id)
SELECT s.line_id, CASE WHEN s.customer_id IS NULL THEN -1 ELSE c.customer_key END, p.product_key, s.date_key,
       s.invoice_no, s.quantity, s.unit_price_milli / 1000.0, s.line_total_milli / 1000.0,
       s.transaction_datetime, s.transaction_type, s.source_row, :run
FROM stg_sales s
JOIN dim_products p ON p.stock_code = s.stock_code
LEFT JOIN dim_customers c ON c.customer_id = s.customer_id
     AND c.effective_date <= s.transaction_datetime
     AND (c.expiry_date IS NULL OR s.transaction_datetime < c.expiry_date)
"""

_DELETE_KNOWN_SALES = """DELETE FROM stg_sales WHERE
    EXISTS (SELECT 1 FROM fact_sales f WHERE f.date_key = stg_sales.date_key AND f.line_id = stg_sales.line_id)
    OR line_id IN (SELECT line_id FROM etl_quarantine)"""
_DELETE_KNOWN_QUARANTINE = """DELETE FROM stg_quarantine WHERE
    line_id IN (SELECT line_id FROM etl_quarantine) OR line_id IN (SELECT line_id FROM fact_sales)"""

_INSERT_QUARANTINE = f"""
INSERT INTO etl_quarantine (run_id, {", ".join(_QUARANTINE_COLUMNS)})
SELECT :run, {", ".join(_QUARANTINE_COLUMNS)} FROM stg_quarantine
"""


@dataclass
class LoadCounts:
    """What the final step changed."""

    facts_loaded: int = 0
    facts_already_loaded: int = 0
    quarantined: int = 0
    quarantine_already_held: int = 0
    quarantine_by_reason: Counter = field(default_factory=Counter)
    dimensions: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class WarehouseLoader:
    """Stages cleaned chunks, then merges them into the warehouse in one set-based step."""

    def __init__(self, conn: Connection, run_id: int) -> None:
        self.conn = conn
        self.run_id = run_id
        self.staged_sales = 0
        self.staged_quarantine = 0
        self.timings: dict[str, float] = {}
        self.products = pd.DataFrame(columns=[*_PRODUCT_COLUMNS, "source_row"])
        self.customer_points = pd.DataFrame(columns=["customer_id", "country", "transaction_datetime"])

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the wall time of a step to `timings` (shown by --format json and benchmarks)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = round(self.timings.get(step, 0.0) + time.perf_counter() - start, 4)

    def _sql(self, sql: str, **params: object) -> int:
        return self.conn.execute(text(sql), params).rowcount

    def create_staging(self) -> None:
        """Create the run's temporary staging tables."""
        for name, ddl in (("stg_sales", _STG_SALES), ("stg_quarantine", _STG_QUARANTINE), ("stg_products", _STG_PRODUCTS)):
            self.conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
            self.conn.execute(text(ddl))

    def stage(self, accepted: pd.DataFrame, rejected: pd.DataFrame) -> None:
        """Bulk-load one chunk's accepted and rejected rows into staging."""
        with self.timed("stage"):
            self.staged_sales += load_frame(self.conn, "stg_sales", accepted[_SALES_COLUMNS])
            self.staged_quarantine += load_frame(self.conn, "stg_quarantine", rejected[_QUARANTINE_COLUMNS])
        with self.timed("fold_dimensions"):
            chunk_products = latest_products(accepted[[*_PRODUCT_COLUMNS, "source_row"]])
            self.products = latest_products(pd.concat([self.products, chunk_products], ignore_index=True))
            chunk_points = first_countries(accepted[["customer_id", "country", "transaction_datetime"]])
            self.customer_points = first_countries(pd.concat([self.customer_points, chunk_points], ignore_index=True))

    def finalize(self) -> LoadCounts:
        """Merge staging into dimensions, facts and quarantine; exactly once by line identity."""
        counts = LoadCounts(timings=self.timings)
        postgres = self.conn.dialect.name == "postgresql"
        if postgres:
            with self.timed("analyze"):
                self.conn.execute(text("SET LOCAL work_mem = '128MB'"))
                self.conn.execute(text("ANALYZE stg_sales"))
        with self.timed("already_loaded"):
            counts.facts_already_loaded = self._sql(_DELETE_KNOWN_SALES)
            counts.quarantine_already_held = self._sql(_DELETE_KNOWN_QUARANTINE)
        with self.timed("dim_date"):
            counts.dimensions["dim_date"] = {"inserted": self._load_dates()}
        with self.timed("dim_products"):
            counts.dimensions["dim_products"] = self._upsert_products()
        with self.timed("dim_customers"):
            counts.dimensions["dim_customers"] = self._merge_customers()
        if postgres:
            with self.timed("analyze"):
                self.conn.execute(text("ANALYZE dim_customers"))
                self.conn.execute(text("ANALYZE dim_products"))
        with self.timed("fact_sales"):
            counts.facts_loaded = self._sql(_INSERT_FACTS, run=self.run_id)
        expected = self.staged_sales - counts.facts_already_loaded
        if counts.facts_loaded != expected:
            raise RuntimeError(f"internal error: {expected} staged facts but {counts.facts_loaded} inserted")
        with self.timed("quarantine"):
            counts.quarantined = self._sql(_INSERT_QUARANTINE, run=self.run_id)
            for reasons, n in self.conn.execute(text("SELECT reasons, COUNT(*) FROM stg_quarantine GROUP BY reasons")):
                for reason in reasons.split(";"):
                    counts.quarantine_by_reason[reason] += n
        return counts

    def _load_dates(self) -> int:
        new_keys = [
            k
            for (k,) in self.conn.execute(
                text("SELECT DISTINCT date_key FROM stg_sales WHERE date_key NOT IN (SELECT date_key FROM dim_date)")
            )
        ]
        if not new_keys:
            return 0
        return load_frame(self.conn, "dim_date", date_rows(new_keys))

    def _upsert_products(self) -> dict[str, int]:
        load_frame(self.conn, "stg_products", self.products[_PRODUCT_COLUMNS])
        self._sql(_UPSERT_PRODUCTS, run=self.run_id)
        row = self.conn.execute(
            text(
                "SELECT SUM(CASE WHEN created_run_id = :run THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN updated_run_id = :run AND created_run_id <> :run THEN 1 ELSE 0 END) FROM dim_products"
            ),
            {"run": self.run_id},
        ).one()
        return {"inserted": int(row[0] or 0), "updated": int(row[1] or 0)}

    def _merge_customers(self) -> dict[str, int]:
        points = self.customer_points
        if points.empty:
            return {"inserted": 0, "expired": 0}
        existing = pd.read_sql_query(
            text("SELECT customer_key, customer_id, effective_date, expiry_date, country FROM dim_customers WHERE customer_id IS NOT NULL"),
            self.conn,
            parse_dates=["effective_date", "expiry_date"],
        )
        plan = plan_customers(existing, points)
        run = self.run_id
        if plan.expire:
            self.conn.execute(
                text(
                    "UPDATE dim_customers SET expiry_date = :expiry_date, is_current = false, expired_run_id = :run WHERE customer_key = :customer_key"
                ),
                [dict(e, run=run, expiry_date=_ts(e["expiry_date"])) for e in plan.expire],
            )
        if plan.extend:
            self.conn.execute(
                text("UPDATE dim_customers SET effective_date = :effective_date WHERE customer_key = :customer_key"),
                [dict(e, effective_date=_ts(e["effective_date"])) for e in plan.extend],
            )
        if plan.inserts:
            frame = pd.DataFrame(plan.inserts)
            frame["created_run_id"] = run
            frame["effective_date"] = pd.to_datetime(frame["effective_date"]).astype("datetime64[us]")
            frame["expiry_date"] = pd.to_datetime(frame["expiry_date"]).astype("datetime64[us]")
            load_frame(self.conn, "dim_customers", frame)
        return {"inserted": len(plan.inserts), "expired": len(plan.expire), "extended": len(plan.extend)}


def _ts(value: object) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).strftime(SQLITE_TS_FORMAT)


def latest_products(rows: pd.DataFrame) -> pd.DataFrame:
    """Per stock code, the latest row with a description (else the latest row): SCD1 candidates."""
    has_description = (rows["description"].fillna("") != "").to_numpy()
    when = rows["transaction_datetime"].to_numpy(dtype="datetime64[us]").view("int64")
    order = np.lexsort((rows["source_row"].to_numpy(dtype="int64"), when, has_description))
    ordered = rows.iloc[order]
    keep = ~ordered["stock_code"].duplicated(keep="last").to_numpy()
    return ordered[keep].reset_index(drop=True)


def first_countries(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (customer, country), the first transaction time: the SCD2 change candidates."""
    known = rows[rows["customer_id"].notna()]
    ordered = known.iloc[np.argsort(known["transaction_datetime"].to_numpy(dtype="datetime64[us]"), kind="stable")]
    return ordered.drop_duplicates(["customer_id", "country"], keep="first").reset_index(drop=True)
