"""The SQL of the retail reports, in one place.

Every report query is written once over `{orders}` (agg_daily_orders: per date and customer
version, orders and the sale / return / adjustment split) and `{products}` (agg_monthly_product:
per month and product).
Its aggregate form reads those tables; its fact form reads the very same aggregates computed
from fact_sales on the fly (`database.aggregate_sql.from_facts`), so both forms give one answer
and the fact form serves a warehouse without the tables or with `cache.use_aggregates: false`.
Dialect differences are `{placeholders}` filled from performance.queries.DIALECT_FRAGMENTS.

Every choice a user makes (period, ranking, merchandise only) selects one of these constant
texts; user values (dates, country, limits) are bound parameters.
"""

from __future__ import annotations

from functools import cache

from database.aggregate_sql import from_facts
from performance.queries import NamedQuery
from reports.rfm import segment_case

PERIOD_KEY = {
    "day": "a.date_key",  # YYYYMMDD
    "week": "{week_start_key}",  # YYYYMMDD of the Monday
    "month": "a.date_key / 100",  # YYYYMM
    "quarter": "d.year * 10 + d.quarter",  # YYYYQ
}
PRODUCT_ORDER = {
    "revenue": "ROUND(s.revenue, 3) DESC",
    "units": "s.units_sold DESC",
    "returns": "s.units_returned DESC",
}
_REVENUE = "a.sale_revenue + a.return_revenue + a.adjustment_revenue"


def report_query(name: str, title: str, sql: str) -> NamedQuery:
    """A query over `{orders}` / `{products}` in its aggregate and its fact form."""
    aggregate = sql.replace("{orders}", "agg_daily_orders").replace("{products}", "agg_monthly_product")
    fact = sql.replace("{orders}", from_facts("agg_daily_orders")).replace("{products}", from_facts("agg_monthly_product"))
    return NamedQuery(f"report.{name}", title, title, fact, aggregate if aggregate != fact else None)


# What the warehouse holds: its date range, its newest transaction, its last successful load.
# Read on every report, in the same snapshot: an empty warehouse is told apart from an empty answer.
WAREHOUSE = report_query(
    "warehouse",
    "Date range, newest transaction and last successful load",
    """
SELECT (SELECT MIN(date_key) FROM fact_sales) AS first_key,
       (SELECT MAX(date_key) FROM fact_sales) AS last_key,
       (SELECT MAX(transaction_datetime) FROM fact_sales WHERE date_key = (SELECT MAX(date_key) FROM fact_sales)) AS latest_transaction,
       (SELECT MAX(finished_at) FROM etl_runs WHERE status = 'success' AND kind = 'load') AS last_load""",
)

TOTALS = report_query(
    "totals",
    "Orders, units and revenue of the whole warehouse",
    f"""
SELECT CAST(SUM(a.orders) AS BIGINT) AS orders, CAST(SUM(a.sale_units) AS BIGINT) AS units,
       CAST(SUM(a.return_invoices) AS BIGINT) AS return_invoices, CAST(-SUM(a.return_units) AS BIGINT) AS units_returned,
       SUM(a.sale_revenue) AS sales, SUM(a.return_revenue) AS returns, SUM(a.adjustment_revenue) AS adjustments,
       (SELECT COUNT(DISTINCT c.customer_id) FROM {{orders}} o JOIN dim_customers c ON c.customer_key = o.customer_key
        WHERE o.customer_key <> -1 AND o.orders > 0) AS customers,
       SUM(CASE WHEN a.customer_key = -1 THEN {_REVENUE} ELSE 0 END) AS anonymous_revenue
FROM {{orders}} a""",
)


@cache
def sales(by: str, by_country: bool) -> NamedQuery:
    """Orders, units, sales, returns, adjustments and customers per period of `by` between the
    bound date keys :start and :end (and of the bound :country)."""
    where = "a.date_key BETWEEN :start AND :end" + (" AND LOWER(c.country) = LOWER(:country)" if by_country else "")
    key = PERIOD_KEY[by]
    return report_query(
        f"sales_by_{by}" + ("_country" if by_country else ""),
        f"Sales by {by}",
        f"""
SELECT {key} AS period_key,
       COUNT(DISTINCT c.customer_id) AS customers,
       CAST(SUM(a.orders) AS BIGINT) AS orders,
       CAST(SUM(a.sale_units) AS BIGINT) AS units,
       SUM(a.sale_revenue) AS sales,
       SUM(a.return_revenue) AS returns,
       SUM(a.adjustment_revenue) AS adjustments
FROM {{orders}} a
JOIN dim_date d ON d.date_key = a.date_key
JOIN dim_customers c ON c.customer_key = a.customer_key
WHERE {where}
GROUP BY {key}
ORDER BY 1""",
    )


@cache
def products(by: str, everything: bool) -> NamedQuery:
    """The :limit products with the most revenue, units sold or units returned (merchandise only
    unless `everything`), with the count and revenue of all products considered."""
    where = "" if everything else "WHERE p.is_merchandise"
    return report_query(
        f"products_by_{by}" + ("_all" if everything else ""),
        f"Products by {by}",
        f"""
SELECT p.stock_code, p.description, p.category, s.units_sold, s.units_returned, s.return_lines, s.returns, s.revenue,
       COUNT(*) OVER () AS products, SUM(s.revenue) OVER () AS total_revenue
FROM (SELECT a.product_key,
             CAST(SUM(a.units) - SUM(a.return_units) AS BIGINT) AS units_sold,
             CAST(-SUM(a.return_units) AS BIGINT) AS units_returned,
             CAST(SUM(a.return_lines) AS BIGINT) AS return_lines,
             SUM(a.return_revenue) AS returns,
             SUM(a.revenue) AS revenue
      FROM {{products}} a GROUP BY a.product_key) s
JOIN dim_products p ON p.product_key = s.product_key
{where}
ORDER BY {PRODUCT_ORDER[by]}, p.stock_code
LIMIT :limit""",
    )


COUNTRIES = report_query(
    "countries",
    "Sales by country",
    """
SELECT c.country,
       COUNT(DISTINCT c.customer_id) AS customers,
       CAST(SUM(a.orders) AS BIGINT) AS orders,
       CAST(SUM(a.sale_units) AS BIGINT) AS units,
       SUM(a.sale_revenue) AS sales,
       SUM(a.return_revenue) AS returns,
       SUM(a.adjustment_revenue) AS adjustments,
       CAST(SUM(a.return_invoices) AS BIGINT) AS return_invoices,
       CAST(-SUM(a.return_units) AS BIGINT) AS units_returned
FROM {orders} a
JOIN dim_customers c ON c.customer_key = a.customer_key
GROUP BY c.country
ORDER BY ROUND(SUM(a.sale_revenue) + SUM(a.return_revenue) + SUM(a.adjustment_revenue), 3) DESC, c.country""",
)

CUSTOMERS = report_query(
    "customers",
    "Top customers by net revenue",
    """
WITH b AS (
    SELECT c.customer_id,
           CAST(SUM(a.orders) AS BIGINT) AS orders,
           CAST(SUM(a.sale_units) AS BIGINT) AS units,
           SUM(a.sale_revenue) AS sales,
           SUM(a.return_revenue) AS returns,
           SUM(a.adjustment_revenue) AS adjustments,
           MIN(CASE WHEN a.orders > 0 THEN a.date_key END) AS first_key,
           MAX(CASE WHEN a.orders > 0 THEN a.date_key END) AS last_key
    FROM {orders} a
    JOIN dim_customers c ON c.customer_key = a.customer_key
    WHERE a.customer_key <> -1
    GROUP BY c.customer_id)
SELECT b.customer_id, cur.country, b.orders, b.units, b.sales, b.returns, b.adjustments, b.first_key, b.last_key,
       COUNT(*) OVER () AS customers, SUM(b.sales + b.returns + b.adjustments) OVER () AS total_revenue
FROM b
JOIN dim_customers cur ON cur.customer_id = b.customer_id AND cur.is_current
ORDER BY ROUND(b.sales + b.returns + b.adjustments, 3) DESC, b.customer_id
LIMIT :limit""",
)

# Recency, frequency, monetary per identified customer with at least one order, scored 1-5 by
# percentile rank (equal values share a score), FM = (F + M) / 2 rounded half up, and the segment.
_RFM = f"""
WITH o AS (
    SELECT a.date_key, a.customer_key, a.orders, {_REVENUE} AS revenue FROM {{orders}} a),
base AS (
    SELECT c.customer_id, MAX(CASE WHEN o.orders > 0 THEN o.date_key END) AS last_key,
           SUM(o.orders) AS frequency, SUM(o.revenue) AS monetary
    FROM o
    JOIN dim_customers c ON c.customer_key = o.customer_key
    WHERE o.customer_key <> -1
    GROUP BY c.customer_id
    HAVING SUM(o.orders) > 0),
ref AS (SELECT MAX(date_key) AS ref_key FROM o WHERE orders > 0),
scored AS (
    SELECT b.customer_id, l.full_date AS last_purchase, r.full_date AS reference_date, {{days_between}} AS recency_days,
           CAST(b.frequency AS BIGINT) AS frequency, b.monetary,
           1 + 5 * (RANK() OVER (ORDER BY b.last_key) - 1) / COUNT(*) OVER () AS r,
           1 + 5 * (RANK() OVER (ORDER BY b.frequency) - 1) / COUNT(*) OVER () AS f,
           1 + 5 * (RANK() OVER (ORDER BY ROUND(b.monetary, 3)) - 1) / COUNT(*) OVER () AS m
    FROM base b
    JOIN dim_date l ON l.date_key = b.last_key
    CROSS JOIN ref
    JOIN dim_date r ON r.date_key = ref.ref_key),
fm AS (SELECT s.*, (s.f + s.m + 1) / 2 AS fm FROM scored s),
segmented AS (SELECT x.*, {segment_case("x.r", "x.fm")} AS segment FROM fm x)"""

RFM_CUSTOMERS = report_query(
    "rfm_customers",
    "RFM scores and segment per customer",
    _RFM
    + """
SELECT customer_id, last_purchase, recency_days, frequency, monetary, r, f, m, fm, segment, reference_date
FROM segmented
ORDER BY customer_id""",
)

RFM_SEGMENTS = report_query(
    "rfm_segments",
    "Customers and revenue per RFM segment",
    _RFM
    + """
SELECT segment, COUNT(*) AS customers, CAST(SUM(recency_days) AS BIGINT) AS recency_days, CAST(SUM(frequency) AS BIGINT) AS orders,
       SUM(monetary) AS revenue, MAX(reference_date) AS reference_date
FROM segmented
GROUP BY segment""",
)

COHORTS = report_query(
    "cohorts",
    "Customers of each monthly acquisition cohort active in each later month",
    """
WITH act AS (
    SELECT DISTINCT c.customer_id, (a.date_key / 10000) * 12 + (a.date_key / 100) % 100 - 1 AS month_no
    FROM {orders} a
    JOIN dim_customers c ON c.customer_key = a.customer_key
    WHERE a.customer_key <> -1 AND a.orders > 0),
firsts AS (SELECT customer_id, MIN(month_no) AS cohort FROM act GROUP BY customer_id)
SELECT f.cohort, act.month_no - f.cohort AS month_offset, COUNT(*) AS customers
FROM act
JOIN firsts f ON f.customer_id = act.customer_id
GROUP BY f.cohort, act.month_no - f.cohort
ORDER BY 1, 2""",
)
