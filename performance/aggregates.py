"""Aggregate tables: daily sales by product and by customer version (and so by country).

They answer the standard analytics queries without scanning the fact. A load aggregates its
new facts in memory chunk by chunk (`RunAggregates`) and writes the rows of dates that had no
facts before; dates that did (overlapping extracts), dates whose facts an SCD2 change moved,
and every date a rollback touches are recomputed from fact_sales with `refresh`. All of it in
the run's own transaction, so the aggregates always agree with fact_sales.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from sqlalchemy import BigInteger, Connection, Integer, bindparam, text
from sqlalchemy.orm import Mapped, mapped_column

from database.bulk import load_frame
from database.models import MONEY, Base


class AggDailyProduct(Base):
    __tablename__ = "agg_daily_product"
    __table_args__ = {"comment": "Per date and product: lines, units and revenue, split into sales and returns"}

    date_key: Mapped[int] = mapped_column(Integer, primary_key=True, comment="YYYYMMDD (dim_date)")
    product_key: Mapped[int] = mapped_column(Integer, primary_key=True, comment="product (dim_products)")
    lines: Mapped[int] = mapped_column(BigInteger, comment="fact rows")
    units: Mapped[int] = mapped_column(BigInteger, comment="sum of quantity (returns negative)")
    revenue: Mapped[float] = mapped_column(MONEY, comment="sum of line_total (returns negative)")
    return_lines: Mapped[int] = mapped_column(BigInteger, comment="fact rows of type return")
    return_units: Mapped[int] = mapped_column(BigInteger, comment="units returned (negative)")
    return_revenue: Mapped[float] = mapped_column(MONEY, comment="revenue of returns (negative)")


class AggDailyCustomer(Base):
    __tablename__ = "agg_daily_customer"
    __table_args__ = {
        "comment": "Per date and customer version: lines, invoices, units, revenue; joined to dim_customers it gives "
        "sales by country, and it is the base of recency/frequency/monetary"
    }

    date_key: Mapped[int] = mapped_column(Integer, primary_key=True, comment="YYYYMMDD (dim_date)")
    customer_key: Mapped[int] = mapped_column(Integer, primary_key=True, comment="customer version (dim_customers; -1 = no customer)")
    lines: Mapped[int] = mapped_column(BigInteger, comment="fact rows")
    invoices: Mapped[int] = mapped_column(BigInteger, comment="distinct invoices (an invoice has one date and one customer)")
    units: Mapped[int] = mapped_column(BigInteger, comment="sum of quantity")
    revenue: Mapped[float] = mapped_column(MONEY, comment="sum of line_total")
    return_revenue: Mapped[float] = mapped_column(MONEY, comment="revenue of returns (negative)")


# ROUND(..., 3): SQLite sums REALs in binary floating point; rounding gives back the exact
# 3-decimal value the in-memory path writes, so both paths store identical numbers.
_RETURN = "CASE WHEN f.transaction_type = 'return' THEN {} ELSE 0 END"
_REFRESH = {
    "agg_daily_product": f"""
        INSERT INTO agg_daily_product (date_key, product_key, lines, units, revenue, return_lines, return_units, return_revenue)
        SELECT f.date_key, f.product_key, COUNT(*), SUM(f.quantity), ROUND(SUM(f.line_total), 3),
               SUM({_RETURN.format(1)}), SUM({_RETURN.format("f.quantity")}), ROUND(SUM({_RETURN.format("f.line_total")}), 3)
        FROM fact_sales f WHERE f.date_key IN :dates GROUP BY f.date_key, f.product_key""",
    "agg_daily_customer": f"""
        INSERT INTO agg_daily_customer (date_key, customer_key, lines, invoices, units, revenue, return_revenue)
        SELECT f.date_key, f.customer_key, COUNT(*), COUNT(DISTINCT f.invoice_no), SUM(f.quantity), ROUND(SUM(f.line_total), 3),
               ROUND(SUM({_RETURN.format("f.line_total")}), 3)
        FROM fact_sales f WHERE f.date_key IN :dates GROUP BY f.date_key, f.customer_key""",
}
AGGREGATE_TABLES = tuple(_REFRESH)


def refresh(conn: Connection, dates: Iterable[int], batch: int = 400) -> int:
    """Recompute every aggregate for `dates` (YYYYMMDD); returns the number of dates refreshed."""
    keys = sorted({int(d) for d in dates})
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        for table, insert in _REFRESH.items():
            conn.execute(
                text(f"DELETE FROM {table} WHERE date_key IN :dates").bindparams(bindparam("dates", expanding=True)), {"dates": part}
            )
            conn.execute(text(insert).bindparams(bindparam("dates", expanding=True)), {"dates": part})
    return len(keys)


class RunAggregates:
    """Per-chunk partial aggregates of one run's new facts, combined at the end."""

    def __init__(self) -> None:
        self._products: list[pd.DataFrame] = []
        self._customers: list[pd.DataFrame] = []
        self._invoices: list[pd.DataFrame] = []

    def add(self, facts: pd.DataFrame) -> None:
        """Fold in a chunk of facts (date_key, product_key, customer_key, invoice_no, quantity,
        line_total_milli, transaction_type)."""
        if facts.empty:
            return
        is_return = (facts["transaction_type"] == "return").to_numpy()
        frame = pd.DataFrame(
            {
                "date_key": facts["date_key"].to_numpy(),
                "product_key": facts["product_key"].to_numpy(),
                "customer_key": facts["customer_key"].to_numpy(),
                "lines": 1,
                "units": facts["quantity"].to_numpy(),
                "revenue": facts["line_total_milli"].to_numpy(),
                "return_lines": is_return.astype(np.int64),
                "return_units": np.where(is_return, facts["quantity"].to_numpy(), 0),
                "return_revenue": np.where(is_return, facts["line_total_milli"].to_numpy(), 0),
            }
        )
        self._products.append(frame.drop(columns="customer_key").groupby(["date_key", "product_key"], as_index=False).sum())
        customer_cols = ["date_key", "customer_key", "lines", "units", "revenue", "return_revenue"]
        self._customers.append(frame[customer_cols].groupby(["date_key", "customer_key"], as_index=False).sum())
        self._invoices.append(facts[["date_key", "customer_key", "invoice_no"]].drop_duplicates())
        if len(self._products) >= 16:
            self._compact()

    def _compact(self) -> None:
        self._products = [pd.concat(self._products).groupby(["date_key", "product_key"], as_index=False).sum()]
        self._customers = [pd.concat(self._customers).groupby(["date_key", "customer_key"], as_index=False).sum()]
        self._invoices = [pd.concat(self._invoices).drop_duplicates()]

    def write(self, conn: Connection, skip_dates: set[int]) -> int:
        """Insert the aggregate rows of every date not in `skip_dates`; returns dates written."""
        if not self._products:
            return 0
        self._compact()
        products, customers, invoices = self._products[0], self._customers[0], self._invoices[0]
        products = products[~products["date_key"].isin(skip_dates)]
        customers = customers[~customers["date_key"].isin(skip_dates)]
        counts = invoices.groupby(["date_key", "customer_key"], as_index=False).size().rename(columns={"size": "invoices"})
        customers = customers.merge(counts, on=["date_key", "customer_key"], how="left")
        for frame, money in ((products, ("revenue", "return_revenue")), (customers, ("revenue", "return_revenue"))):
            for col in money:
                frame[col] = frame[col] / 1000
        load_frame(conn, "agg_daily_product", products)
        load_frame(
            conn, "agg_daily_customer", customers[["date_key", "customer_key", "lines", "invoices", "units", "revenue", "return_revenue"]]
        )
        return int(products["date_key"].nunique())


def dates_of_customers(conn: Connection, customer_keys: list[int]) -> set[int]:
    """Dates with facts of these customer versions (their country aggregates may move)."""
    if not customer_keys:
        return set()
    sql = text("SELECT DISTINCT date_key FROM fact_sales WHERE customer_key IN :keys").bindparams(bindparam("keys", expanding=True))
    return {d for (d,) in conn.execute(sql, {"keys": customer_keys})}
