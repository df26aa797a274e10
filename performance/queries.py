"""The standard analytics queries: the questions analysts ask again and again.

Each query holds its SQL in one place: over the star schema (fact_sales + dimensions) and, where
one exists, over the aggregate tables (agg_monthly_sales by month, agg_customer_totals per customer
version, agg_product_totals per product: a few thousand rows each on the real file), which give
the same answer without scanning the fact. The service picks the aggregate form when the tables
exist and `cache.use_aggregates` is on. Both forms run on SQLite and PostgreSQL; the few
dialect differences are `{placeholders}` filled from DIALECT_FRAGMENTS.

What is counted, so that nothing is excluded silently:
- revenue is net: sum of line_total over sales, returns (negative) and adjustments, all
  products (postage, fees and vouchers included); `returns` is the returns' share (negative).
- rankings of products (top_products, return_rate_by_product) cover merchandise only
  (dim_products.is_merchandise): postage, fees, adjustments, vouchers and charity are not goods.
- countries come from the customer version valid at the sale (SCD2); sales without a
  CustomerID belong to the unknown customer (key -1), whose country is 'Unknown'.
- the RFM base covers identified customers only (not key -1), across their versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from database.aggregate_sql import RETURN_CASE
from performance.sqlguard import QueryError

DIALECT_FRAGMENTS = {
    "postgresql": {
        "days_between": "(r.full_date - l.full_date)",
        # YYYYMMDD of the Monday of dim_date d's ISO week (the reports' weeks)
        "week_start_key": "CAST(to_char(d.full_date - (d.weekday - 1), 'YYYYMMDD') AS INTEGER)",
    },
    "sqlite": {
        "days_between": "CAST(julianday(r.full_date) - julianday(l.full_date) AS INTEGER)",
        "week_start_key": "CAST(strftime('%Y%m%d', d.full_date, '-' || (d.weekday - 1) || ' days') AS INTEGER)",
    },
}

LATEST_MONTH_SQL = "SELECT MAX(date_key) / 100 FROM dim_date"  # dim_date holds the dates of loaded facts


@dataclass(frozen=True)
class Param:
    name: str
    kind: Literal["int", "month"]
    default: int | str
    description: str
    minimum: int = 1
    maximum: int = 100_000

    def parse(self, raw: str | int) -> int | str:
        """The value of a command-line `name=value` (months as YYYYMM, or 'latest')."""
        text = str(raw).strip()
        if self.kind == "int":
            if not re.fullmatch(r"-?\d+", text) or not self.minimum <= int(text) <= self.maximum:
                raise QueryError(f"parameter {self.name} must be a whole number from {self.minimum} to {self.maximum}, got {text!r}")
            return int(text)
        if text.lower() == "latest":
            return "latest"
        match = re.fullmatch(r"(\d{4})-?(\d{2})", text)
        if not match or not 1 <= int(match[2]) <= 12:
            raise QueryError(f"parameter {self.name} must be a month YYYY-MM or 'latest', got {text!r}")
        return int(match[1]) * 100 + int(match[2])


@dataclass(frozen=True)
class NamedQuery:
    name: str
    title: str
    description: str
    fact_sql: str
    aggregate_sql: str | None = None
    params: tuple[Param, ...] = field(default_factory=tuple)

    def sql(self, dialect: str, aggregates: bool) -> tuple[str, str]:
        """(form, SQL text) for a dialect: form is 'aggregate' or 'fact'."""
        form, sql = ("aggregate", self.aggregate_sql) if aggregates and self.aggregate_sql else ("fact", self.fact_sql)
        return form, sql.format(**DIALECT_FRAGMENTS[dialect]).strip()

    def parse_params(self, raw: dict[str, str] | None) -> dict[str, int | str]:
        """Parameter values from `name=value` pairs, defaults filled in; unknown names refused."""
        raw = dict(raw or {})
        known = {p.name: p for p in self.params}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            allowed = ", ".join(known) or "none"
            raise QueryError(f"query {self.name} has no parameter {', '.join(unknown)} (parameters: {allowed})")
        return {name: p.parse(raw.get(name, p.default)) for name, p in known.items()}


def bind(values: dict[str, int | str]) -> dict[str, int]:
    """Bound parameters of the SQL: a month becomes a [start, end] date-key range."""
    out: dict[str, int] = {}
    for name, value in values.items():
        if name == "month":
            out["start"], out["end"] = int(value) * 100 + 1, int(value) * 100 + 31
        else:
            out[name] = int(value)
    return out


_LIMIT_TOP = Param("limit", "int", 10, "how many products")
_LIMIT_RETURNS = Param("limit", "int", 20, "how many products")
_MONTH = Param("month", "month", "latest", "month YYYY-MM, or latest (the last month with sales)")

STANDARD_QUERIES: dict[str, NamedQuery] = {
    q.name: q
    for q in (
        NamedQuery(
            "revenue_by_month",
            "Revenue by month",
            "Invoices, lines, units, net revenue and returns per calendar month; every line counted (sales, returns, "
            "adjustments; postage and fees included).",
            f"""
SELECT d.year, d.month,
       COUNT(DISTINCT f.invoice_no) AS invoices,
       COUNT(*) AS lines,
       CAST(SUM(f.quantity) AS BIGINT) AS units,
       ROUND(SUM(f.line_total), 2) AS revenue,
       ROUND(SUM({RETURN_CASE.format("f.line_total")}), 2) AS returns
FROM fact_sales f
JOIN dim_date d ON d.date_key = f.date_key
GROUP BY d.year, d.month
ORDER BY d.year, d.month""",
            """
SELECT m.month_key / 100 AS year, m.month_key % 100 AS month,
       CAST(m.invoices AS BIGINT) AS invoices,
       CAST(m.lines AS BIGINT) AS lines,
       CAST(m.units AS BIGINT) AS units,
       ROUND(m.revenue, 2) AS revenue,
       ROUND(m.return_revenue, 2) AS returns
FROM agg_monthly_sales m
ORDER BY m.month_key""",
        ),
        NamedQuery(
            "revenue_by_country",
            "Revenue by country",
            "Customers, invoices, units, net revenue and returns per country of the customer version valid at the sale; "
            "sales without a CustomerID are under 'Unknown'; a customer who moved counts in both countries.",
            f"""
SELECT c.country,
       COUNT(DISTINCT c.customer_id) AS customers,
       COUNT(DISTINCT f.invoice_no) AS invoices,
       CAST(SUM(f.quantity) AS BIGINT) AS units,
       ROUND(SUM(f.line_total), 2) AS revenue,
       ROUND(SUM({RETURN_CASE.format("f.line_total")}), 2) AS returns
FROM fact_sales f
JOIN dim_customers c ON c.customer_key = f.customer_key
GROUP BY c.country
ORDER BY SUM(f.line_total) DESC, c.country""",
            """
SELECT c.country,
       COUNT(DISTINCT c.customer_id) AS customers,
       CAST(SUM(a.invoices) AS BIGINT) AS invoices,
       CAST(SUM(a.units) AS BIGINT) AS units,
       ROUND(SUM(a.revenue), 2) AS revenue,
       ROUND(SUM(a.return_revenue), 2) AS returns
FROM agg_customer_totals a
JOIN dim_customers c ON c.customer_key = a.customer_key
GROUP BY c.country
ORDER BY SUM(a.revenue) DESC, c.country""",
        ),
        NamedQuery(
            "top_products",
            "Top products by net revenue",
            "The LIMIT merchandise products with the highest net revenue (returns subtracted); non-merchandise codes "
            "(postage, fees, adjustments, vouchers) are not ranked.",
            """
SELECT p.stock_code, p.description, s.lines, s.units, s.revenue
FROM (SELECT f.product_key, COUNT(*) AS lines, CAST(SUM(f.quantity) AS BIGINT) AS units, ROUND(SUM(f.line_total), 2) AS revenue
      FROM fact_sales f GROUP BY f.product_key) s
JOIN dim_products p ON p.product_key = s.product_key
WHERE p.is_merchandise
ORDER BY s.revenue DESC, p.stock_code
LIMIT :limit""",
            """
SELECT p.stock_code, p.description, CAST(a.lines AS BIGINT) AS lines, CAST(a.units AS BIGINT) AS units,
       ROUND(a.revenue, 2) AS revenue
FROM agg_product_totals a
JOIN dim_products p ON p.product_key = a.product_key
WHERE p.is_merchandise
ORDER BY ROUND(a.revenue, 2) DESC, p.stock_code
LIMIT :limit""",
            (_LIMIT_TOP,),
        ),
        NamedQuery(
            "return_rate_by_product",
            "Return rate by product",
            "Merchandise products with returns, most units returned first: units sold (sales and adjustments), units "
            "returned, return lines and return rate = returned / sold (empty when nothing was sold).",
            f"""
SELECT p.stock_code, p.description, s.units_sold, s.units_returned, s.return_lines,
       CASE WHEN s.units_sold > 0 THEN ROUND(1.0 * s.units_returned / s.units_sold, 4) END AS return_rate
FROM (SELECT f.product_key,
             CAST(SUM(f.quantity) - SUM({RETURN_CASE.format("f.quantity")}) AS BIGINT) AS units_sold,
             CAST(-SUM({RETURN_CASE.format("f.quantity")}) AS BIGINT) AS units_returned,
             CAST(SUM({RETURN_CASE.format("1")}) AS BIGINT) AS return_lines
      FROM fact_sales f GROUP BY f.product_key) s
JOIN dim_products p ON p.product_key = s.product_key
WHERE p.is_merchandise AND s.units_returned > 0
ORDER BY s.units_returned DESC, p.stock_code
LIMIT :limit""",
            """
SELECT p.stock_code, p.description, s.units_sold, s.units_returned, s.return_lines,
       CASE WHEN s.units_sold > 0 THEN ROUND(1.0 * s.units_returned / s.units_sold, 4) END AS return_rate
FROM (SELECT a.product_key,
             CAST(a.units - a.return_units AS BIGINT) AS units_sold,
             CAST(-a.return_units AS BIGINT) AS units_returned,
             CAST(a.return_lines AS BIGINT) AS return_lines
      FROM agg_product_totals a) s
JOIN dim_products p ON p.product_key = s.product_key
WHERE p.is_merchandise AND s.units_returned > 0
ORDER BY s.units_returned DESC, p.stock_code
LIMIT :limit""",
            (_LIMIT_RETURNS,),
        ),
        NamedQuery(
            "customer_rfm",
            "Customer recency, frequency, monetary base",
            "Per identified customer (all versions): last transaction date, days from it to the warehouse's last "
            "transaction date of any customer, invoices (returns included) and net revenue; sales without a CustomerID "
            "are not attributable and left out.",
            """
WITH base AS (
    SELECT c.customer_id, MAX(f.date_key) AS last_key, COUNT(DISTINCT f.invoice_no) AS frequency, SUM(f.line_total) AS monetary
    FROM fact_sales f
    JOIN dim_customers c ON c.customer_key = f.customer_key
    WHERE f.customer_key <> -1
    GROUP BY c.customer_id)
SELECT b.customer_id, l.full_date AS last_purchase, {days_between} AS recency_days, b.frequency, ROUND(b.monetary, 2) AS monetary
FROM base b
JOIN dim_date l ON l.date_key = b.last_key
CROSS JOIN (SELECT MAX(last_key) AS ref_key FROM base) m
JOIN dim_date r ON r.date_key = m.ref_key
ORDER BY b.customer_id""",
            """
WITH base AS (
    SELECT c.customer_id, MAX(a.last_date_key) AS last_key, CAST(SUM(a.invoices) AS BIGINT) AS frequency, SUM(a.revenue) AS monetary
    FROM agg_customer_totals a
    JOIN dim_customers c ON c.customer_key = a.customer_key
    WHERE a.customer_key <> -1
    GROUP BY c.customer_id)
SELECT b.customer_id, l.full_date AS last_purchase, {days_between} AS recency_days, b.frequency, ROUND(b.monetary, 2) AS monetary
FROM base b
JOIN dim_date l ON l.date_key = b.last_key
CROSS JOIN (SELECT MAX(last_key) AS ref_key FROM base) m
JOIN dim_date r ON r.date_key = m.ref_key
ORDER BY b.customer_id""",
        ),
        NamedQuery(
            "daily_sales",
            "Daily sales of one month",
            "Invoices, lines, units and net revenue per day of MONTH (all lines); the fact form reads fact_sales filtered "
            "on date_key, so PostgreSQL scans only that month's partition.",
            """
SELECT d.full_date AS day, d.day_name,
       COUNT(DISTINCT f.invoice_no) AS invoices,
       COUNT(*) AS lines,
       CAST(SUM(f.quantity) AS BIGINT) AS units,
       ROUND(SUM(f.line_total), 2) AS revenue
FROM fact_sales f
JOIN dim_date d ON d.date_key = f.date_key
WHERE f.date_key BETWEEN :start AND :end
GROUP BY d.full_date, d.day_name
ORDER BY d.full_date""",
            """
SELECT d.full_date AS day, d.day_name,
       CAST(SUM(a.invoices) AS BIGINT) AS invoices,
       CAST(SUM(a.lines) AS BIGINT) AS lines,
       CAST(SUM(a.units) AS BIGINT) AS units,
       ROUND(SUM(a.revenue), 2) AS revenue
FROM agg_daily_customer a
JOIN dim_date d ON d.date_key = a.date_key
WHERE a.date_key BETWEEN :start AND :end
GROUP BY d.full_date, d.day_name
ORDER BY d.full_date""",
            (_MONTH,),
        ),
    )
}


def get_query(name: str) -> NamedQuery:
    """A standard query by name, or a QueryError listing the names."""
    try:
        return STANDARD_QUERIES[name]
    except KeyError:
        raise QueryError(f"no standard query named {name!r}; `query --list` shows them: {', '.join(STANDARD_QUERIES)}") from None
