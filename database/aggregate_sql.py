"""The aggregate tables' names and the SQL that computes each from fact_sales: plain strings,
no SQLAlchemy, so that readers of the aggregates (the query service, the standard queries,
the reports, and their answers served from the cache) need not load SQLAlchemy or the tables.

`database.aggregates` holds the tables' definitions and the refresh that writes them, from these
same definitions.
"""

from __future__ import annotations

# ROUND(..., 3): SQLite sums REALs in binary floating point; rounding gives back the exact
# 3-decimal value the in-memory path writes, so both paths store identical numbers.
RETURN_CASE = "CASE WHEN f.transaction_type = 'return' THEN {} ELSE 0 END"  # a fact's value when it is a return, else 0
_SALE = "CASE WHEN f.transaction_type = 'sale' THEN {} ELSE 0 END"
_ADJUSTMENT = "CASE WHEN f.transaction_type = 'adjustment' THEN {} ELSE 0 END"
_INVOICES_OF = "COUNT(DISTINCT CASE WHEN f.transaction_type = '{}' THEN f.invoice_no END)"
# Each aggregate as a SELECT over fact_sales: its columns in table order, `{where}` filters the facts.
DAILY = {
    "agg_daily_product": f"""
        SELECT f.date_key, f.product_key, COUNT(*) AS lines, SUM(f.quantity) AS units, ROUND(SUM(f.line_total), 3) AS revenue,
               SUM({RETURN_CASE.format(1)}) AS return_lines, SUM({RETURN_CASE.format("f.quantity")}) AS return_units,
               ROUND(SUM({RETURN_CASE.format("f.line_total")}), 3) AS return_revenue
        FROM fact_sales f {{where}} GROUP BY f.date_key, f.product_key""",
    "agg_daily_customer": f"""
        SELECT f.date_key, f.customer_key, COUNT(*) AS lines, COUNT(DISTINCT f.invoice_no) AS invoices, SUM(f.quantity) AS units,
               ROUND(SUM(f.line_total), 3) AS revenue, ROUND(SUM({RETURN_CASE.format("f.line_total")}), 3) AS return_revenue
        FROM fact_sales f {{where}} GROUP BY f.date_key, f.customer_key""",
    "agg_daily_orders": f"""
        SELECT f.date_key, f.customer_key, {_INVOICES_OF.format("sale")} AS orders, SUM({_SALE.format("f.quantity")}) AS sale_units,
               ROUND(SUM({_SALE.format("f.line_total")}), 3) AS sale_revenue, {_INVOICES_OF.format("return")} AS return_invoices,
               SUM({RETURN_CASE.format("f.quantity")}) AS return_units, ROUND(SUM({RETURN_CASE.format("f.line_total")}), 3) AS return_revenue,
               ROUND(SUM({_ADJUSTMENT.format("f.line_total")}), 3) AS adjustment_revenue
        FROM fact_sales f {{where}} GROUP BY f.date_key, f.customer_key""",
}
# agg_monthly_product: the sums of agg_daily_product by month, over any relation `a` with its
# columns (the table itself when refreshing, the daily aggregate's fact form for reports).
MONTHLY = """
        SELECT a.date_key / 100 AS month_key, a.product_key, SUM(a.lines) AS lines, SUM(a.units) AS units,
               ROUND(SUM(a.revenue), 3) AS revenue, SUM(a.return_lines) AS return_lines, SUM(a.return_units) AS return_units,
               ROUND(SUM(a.return_revenue), 3) AS return_revenue
        FROM {source} a {where} GROUP BY a.date_key / 100, a.product_key"""
# The all-dates tables: sums of a daily or monthly table over any relation `a` with its columns.
ROLLUPS = {
    "agg_monthly_sales": """
        SELECT a.date_key / 100 AS month_key, SUM(a.lines) AS lines, SUM(a.invoices) AS invoices, SUM(a.units) AS units,
               ROUND(SUM(a.revenue), 3) AS revenue, ROUND(SUM(a.return_revenue), 3) AS return_revenue
        FROM {source} a {where} GROUP BY a.date_key / 100""",
    "agg_customer_totals": """
        SELECT a.customer_key, MAX(a.date_key) AS last_date_key, SUM(a.lines) AS lines, SUM(a.invoices) AS invoices,
               SUM(a.units) AS units, ROUND(SUM(a.revenue), 3) AS revenue, ROUND(SUM(a.return_revenue), 3) AS return_revenue
        FROM {source} a {where} GROUP BY a.customer_key""",
    "agg_product_totals": """
        SELECT a.product_key, SUM(a.lines) AS lines, SUM(a.units) AS units, ROUND(SUM(a.revenue), 3) AS revenue,
               SUM(a.return_lines) AS return_lines, SUM(a.return_units) AS return_units, ROUND(SUM(a.return_revenue), 3) AS return_revenue
        FROM {source} a {where} GROUP BY a.product_key""",
}
ROLLUP_SOURCE = {
    "agg_monthly_sales": "agg_daily_customer",
    "agg_customer_totals": "agg_daily_customer",
    "agg_product_totals": "agg_monthly_product",
}
# In refresh order: the daily tables from the facts, agg_monthly_product from agg_daily_product,
# then the all-dates tables.
AGGREGATE_TABLES = (*DAILY, "agg_monthly_product", *ROLLUPS)


def from_facts(table: str) -> str:
    """The aggregate `table` computed from fact_sales, as a derived table for a FROM clause: the
    fact form of a query over the aggregates, with the very same definition."""
    if table == "agg_monthly_product":
        return "(" + MONTHLY.format(source=from_facts("agg_daily_product"), where="").strip() + ")"
    if table in ROLLUPS:
        return "(" + ROLLUPS[table].format(source=from_facts(ROLLUP_SOURCE[table]), where="").strip() + ")"
    return "(" + DAILY[table].format(where="").strip() + ")"
