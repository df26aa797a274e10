"""Aggregate tables: daily sales by product, by country and by customer.

They answer the standard analytics queries without scanning the fact. Each load, replay and
rollback refreshes them for the dates it touched only, inside its own transaction, so they
are always consistent with fact_sales.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import BigInteger, Connection, Integer, String, bindparam, text
from sqlalchemy.orm import Mapped, mapped_column

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


class AggDailyCountry(Base):
    __tablename__ = "agg_daily_country"
    __table_args__ = {"comment": "Per date and customer country (of the version valid at the sale): invoices, units, revenue"}

    date_key: Mapped[int] = mapped_column(Integer, primary_key=True, comment="YYYYMMDD (dim_date)")
    country: Mapped[str] = mapped_column(
        String(100), primary_key=True, comment="country of the customer version ('Unknown' without a customer)"
    )
    lines: Mapped[int] = mapped_column(BigInteger, comment="fact rows")
    invoices: Mapped[int] = mapped_column(BigInteger, comment="distinct invoices (an invoice has one date and one customer)")
    units: Mapped[int] = mapped_column(BigInteger, comment="sum of quantity")
    revenue: Mapped[float] = mapped_column(MONEY, comment="sum of line_total")
    return_revenue: Mapped[float] = mapped_column(MONEY, comment="revenue of returns (negative)")


class AggDailyCustomer(Base):
    __tablename__ = "agg_daily_customer"
    __table_args__ = {"comment": "Per date and customer version: invoices, units, revenue (the base of recency/frequency/monetary)"}

    date_key: Mapped[int] = mapped_column(Integer, primary_key=True, comment="YYYYMMDD (dim_date)")
    customer_key: Mapped[int] = mapped_column(Integer, primary_key=True, comment="customer version (dim_customers)")
    invoices: Mapped[int] = mapped_column(BigInteger, comment="distinct invoices")
    units: Mapped[int] = mapped_column(BigInteger, comment="sum of quantity")
    revenue: Mapped[float] = mapped_column(MONEY, comment="sum of line_total")


_RETURN = "CASE WHEN f.transaction_type = 'return' THEN {} ELSE 0 END"
_REFRESH = {
    "agg_daily_product": f"""
        INSERT INTO agg_daily_product (date_key, product_key, lines, units, revenue, return_lines, return_units, return_revenue)
        SELECT f.date_key, f.product_key, COUNT(*), SUM(f.quantity), SUM(f.line_total),
               SUM({_RETURN.format(1)}), SUM({_RETURN.format("f.quantity")}), SUM({_RETURN.format("f.line_total")})
        FROM fact_sales f WHERE f.date_key IN :dates GROUP BY f.date_key, f.product_key""",
    "agg_daily_country": f"""
        INSERT INTO agg_daily_country (date_key, country, lines, invoices, units, revenue, return_revenue)
        SELECT f.date_key, c.country, COUNT(*), COUNT(DISTINCT f.invoice_no), SUM(f.quantity), SUM(f.line_total), SUM({_RETURN.format("f.line_total")})
        FROM fact_sales f JOIN dim_customers c ON c.customer_key = f.customer_key
        WHERE f.date_key IN :dates GROUP BY f.date_key, c.country""",
    "agg_daily_customer": """
        INSERT INTO agg_daily_customer (date_key, customer_key, invoices, units, revenue)
        SELECT f.date_key, f.customer_key, COUNT(DISTINCT f.invoice_no), SUM(f.quantity), SUM(f.line_total)
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


def dates_of_customers(conn: Connection, customer_keys: list[int]) -> set[int]:
    """Dates with facts of these customer versions (their country aggregates may move)."""
    if not customer_keys:
        return set()
    sql = text("SELECT DISTINCT date_key FROM fact_sales WHERE customer_key IN :keys").bindparams(bindparam("keys", expanding=True))
    return {d for (d,) in conn.execute(sql, {"keys": customer_keys})}
