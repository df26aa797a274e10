"""Aggregate tables: daily sales by product and by customer version (and so by country), daily
orders, returns and adjustments by customer version, and monthly sales by product (the last two
are the base of `report`).

They answer the standard analytics queries and the reports without scanning the fact. A load
aggregates its new facts chunk by chunk (`etl.aggregates.RunAggregates`) and adds them, every few chunks, to
the rows of dates that had no facts before; dates that did (overlapping extracts), dates whose
facts an SCD2 change moved, and every date a rollback touches are recomputed from fact_sales
with `refresh`. The
months of every date written either way are then recomputed from agg_daily_product, but for the
months without facts before the run and nothing to recompute: the run writes their product rows
from its own monthly sums. All of it in the run's own transaction, so the aggregates always agree
with fact_sales.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, Column, Connection, Index, Integer, Table, bindparam, text

from database.aggregate_sql import AGGREGATE_TABLES, DAILY, MONTHLY, ROLLUP_SOURCE, ROLLUPS
from database.models import METADATA, MONEY

if TYPE_CHECKING:  # pandas and the bulk writers load only when a run writes aggregates: readers of the
    import pandas as pd  # table names (the query service, set-up) stay light


def _product_sums() -> list[Column]:
    """The sums every product aggregate holds (declared once; columns follow the table's keys)."""
    return [
        Column("lines", BigInteger, comment="fact rows", nullable=False),
        Column("units", BigInteger, comment="sum of quantity (returns negative)", nullable=False),
        Column("revenue", MONEY, comment="sum of line_total (returns negative)", nullable=False),
        Column("return_lines", BigInteger, comment="fact rows of type return", nullable=False),
        Column("return_units", BigInteger, comment="units returned (negative)", nullable=False),
        Column("return_revenue", MONEY, comment="revenue of returns (negative)", nullable=False),
    ]


def _customer_sums() -> list[Column]:
    """The sums every customer and all-sales aggregate holds (columns follow the table's own)."""
    return [
        Column("lines", BigInteger, comment="fact rows", nullable=False),
        Column("invoices", BigInteger, comment="distinct invoices (an invoice has one date and one customer)", nullable=False),
        Column("units", BigInteger, comment="sum of quantity (returns negative)", nullable=False),
        Column("revenue", MONEY, comment="sum of line_total (returns negative)", nullable=False),
        Column("return_revenue", MONEY, comment="revenue of returns (negative)", nullable=False),
    ]


agg_daily_product = Table(
    "agg_daily_product",
    METADATA,
    Column("date_key", Integer, primary_key=True, comment="YYYYMMDD (dim_date)"),
    Column("product_key", Integer, primary_key=True, comment="product (dim_products)"),
    *_product_sums(),
    comment="Per date and product: lines, units and revenue, split into sales and returns",
)


agg_daily_customer = Table(
    "agg_daily_customer",
    METADATA,
    Column("date_key", Integer, primary_key=True, comment="YYYYMMDD (dim_date)"),
    Column("customer_key", Integer, primary_key=True, comment="customer version (dim_customers; -1 = no customer)"),
    *_customer_sums(),
    # agg_customer_totals recomputes the versions a load touched from their daily rows
    Index("ix_agg_daily_customer_customer", "customer_key"),
    comment="Per date and customer version: lines, invoices, units, revenue; joined to dim_customers it gives "
    "sales by country, and it is the base of recency/frequency/monetary",
)


agg_daily_orders = Table(
    "agg_daily_orders",
    METADATA,
    Column("date_key", Integer, primary_key=True, comment="YYYYMMDD (dim_date)"),
    Column("customer_key", Integer, primary_key=True, comment="customer version (dim_customers; -1 = no customer)"),
    Column("orders", BigInteger, comment="distinct invoices with a sale line (an invoice has one date and one customer)", nullable=False),
    Column("sale_units", BigInteger, comment="units of sale lines", nullable=False),
    Column("sale_revenue", MONEY, comment="revenue of sale lines", nullable=False),
    Column("return_invoices", BigInteger, comment="distinct invoices with a return line", nullable=False),
    Column("return_units", BigInteger, comment="units of return lines (negative)", nullable=False),
    Column("return_revenue", MONEY, comment="revenue of return lines (negative)", nullable=False),
    Column("adjustment_revenue", MONEY, comment="revenue of bad-debt adjustment lines", nullable=False),
    comment="Per date and customer version, by transaction type: orders (distinct sale invoices), units and revenue of "
    "sales; invoices, units and revenue of returns; revenue of adjustments. The base of the retail reports (`report`)",
)


agg_monthly_product = Table(
    "agg_monthly_product",
    METADATA,
    Column("month_key", Integer, primary_key=True, comment="YYYYMM"),
    Column("product_key", Integer, primary_key=True, comment="product (dim_products)"),
    *_product_sums(),
    # agg_product_totals recomputes the products a load touched from their monthly rows
    Index("ix_agg_monthly_product_product", "product_key"),
    comment="Per month and product: agg_daily_product summed by month (about 8 times fewer rows), for reports",
)


agg_monthly_sales = Table(
    "agg_monthly_sales",
    METADATA,
    Column("month_key", Integer, primary_key=True, comment="YYYYMM"),
    *_customer_sums(),
    comment="Per month, every fact: agg_daily_customer summed by month (one row a month), for revenue by month",
)


agg_customer_totals = Table(
    "agg_customer_totals",
    METADATA,
    Column("customer_key", Integer, primary_key=True, comment="customer version (dim_customers; -1 = no customer)"),
    Column("last_date_key", Integer, comment="YYYYMMDD of the version's last fact", nullable=False),
    *_customer_sums(),
    comment="Per customer version, all dates: agg_daily_customer summed by customer version, with its last date; "
    "for revenue by country and the recency/frequency/monetary base",
)


agg_product_totals = Table(
    "agg_product_totals",
    METADATA,
    Column("product_key", Integer, primary_key=True, comment="product (dim_products)"),
    *_product_sums(),
    comment="Per product, all dates: agg_monthly_product summed by product, for product rankings",
)


# Each table's columns in table order, from its definition (a name in AGGREGATE_TABLES without a table fails here).
COLUMNS = {table: tuple(c.name for c in METADATA.tables[table].columns) for table in AGGREGATE_TABLES}
_REFRESH = {
    table: f"INSERT INTO {table} ({', '.join(COLUMNS[table])}) " + select.format(where="WHERE f.date_key IN :dates")
    for table, select in DAILY.items()
}


def refresh(
    conn: Connection, dates: Iterable[int], months: Iterable[int] = (), batch: int = 400, products_written: Iterable[int] = ()
) -> int:
    """Recompute every daily aggregate for `dates` (YYYYMMDD), then agg_monthly_product and
    agg_monthly_sales for their months and `months` (YYYYMM), then the all-dates totals of every
    customer version and product with a row in those months or on those dates before; returns
    the number of dates refreshed. `products_written`: months whose agg_monthly_product rows the
    caller has written itself (`write_monthly_products`); their totals are still recomputed."""
    keys = sorted({int(d) for d in dates})
    touched = _Keys()
    for start in range(0, len(keys), batch):
        part = keys[start : start + batch]
        touched.collect(conn, part)
        for table, insert in _REFRESH.items():
            conn.execute(
                text(f"DELETE FROM {table} WHERE date_key IN :dates").bindparams(bindparam("dates", expanding=True)), {"dates": part}
            )
            conn.execute(text(insert).bindparams(bindparam("dates", expanding=True)), {"dates": part})
    done = {k // 100 for k in keys} | {int(m) for m in months}
    _refresh_months(conn, done, {int(m) for m in products_written})
    _refresh_totals(conn, done | {int(m) for m in products_written}, touched)
    return len(keys)


def _months_filter(months: set[int]) -> tuple[str, dict]:
    """WHERE clause on a.date_key selecting `months` (the range lets an index on date_key help)."""
    done = sorted(months)
    return "WHERE a.date_key BETWEEN :first AND :last AND a.date_key / 100 IN :months", {
        "months": done,
        "first": done[0] * 100 + 1,
        "last": done[-1] * 100 + 31,
    }


def _refresh_months(conn: Connection, months: set[int], products_written: set[int] = frozenset()) -> None:
    """Recompute agg_monthly_product (but for `products_written`) and agg_monthly_sales for
    `months` (YYYYMM), set-based."""
    for table, chosen, select, source in (
        ("agg_monthly_product", months - products_written, MONTHLY, "agg_daily_product"),
        ("agg_monthly_sales", months | products_written, ROLLUPS["agg_monthly_sales"], ROLLUP_SOURCE["agg_monthly_sales"]),
    ):
        if not chosen:
            continue
        where, params = _months_filter(chosen)
        delete = f"DELETE FROM {table} WHERE month_key IN :months"
        conn.execute(text(delete).bindparams(bindparam("months", expanding=True)), params)
        insert = f"INSERT INTO {table} ({', '.join(COLUMNS[table])}) {select.format(source=source, where=where)}"
        conn.execute(text(insert).bindparams(bindparam("months", expanding=True)), params)


def write_monthly_products(conn: Connection, rows: pd.DataFrame) -> None:
    """Replace agg_monthly_product's rows of the months in `rows` (`RunAggregates.monthly_products`)."""
    from database.bulk import load_frame

    if rows.empty:
        return
    months = sorted(int(m) for m in rows["month_key"].unique())
    conn.execute(
        text("DELETE FROM agg_monthly_product WHERE month_key IN :months").bindparams(bindparam("months", expanding=True)),
        {"months": months},
    )
    load_frame(conn, "agg_monthly_product", rows)


class _Keys:
    """Customer versions and products whose totals a refresh must recompute: those with rows the
    refresh replaced (their totals may shrink or vanish) and those with rows in its months now."""

    LIMIT = 5_000  # beyond this many keys, a totals table is recomputed whole (one GROUP BY)

    def __init__(self) -> None:
        self.customers: set[int] = set()
        self.products: set[int] = set()

    def collect(self, conn: Connection, dates: list[int]) -> None:
        """Keys with daily rows on `dates` (before they are replaced)."""
        for keys, column, table in (
            (self.customers, "customer_key", "agg_daily_customer"),
            (self.products, "product_key", "agg_daily_product"),
        ):
            sql = text(f"SELECT DISTINCT {column} FROM {table} WHERE date_key IN :dates").bindparams(bindparam("dates", expanding=True))
            keys.update(k for (k,) in conn.execute(sql, {"dates": dates}))

    def collect_months(self, conn: Connection, months: set[int]) -> None:
        """Keys with rows in `months` (after their refresh)."""
        where, params = _months_filter(months)
        for keys, sql in (
            (self.customers, f"SELECT DISTINCT a.customer_key FROM agg_daily_customer a {where}"),
            (self.products, "SELECT DISTINCT a.product_key FROM agg_monthly_product a WHERE a.month_key IN :months"),
        ):
            keys.update(k for (k,) in conn.execute(text(sql).bindparams(bindparam("months", expanding=True)), params))


def _refresh_totals(conn: Connection, months: set[int], keys: _Keys) -> None:
    """Recompute agg_customer_totals and agg_product_totals for `keys` plus every key with a row
    in `months`; a table is recomputed whole when that is more than _Keys.LIMIT keys. The keys
    are read first and listed, so no statement writes one table from a subquery on another."""
    if not months:
        return
    keys.collect_months(conn, months)
    for table, column, chosen in (
        ("agg_customer_totals", "customer_key", keys.customers),
        ("agg_product_totals", "product_key", keys.products),
    ):
        columns, source = ", ".join(COLUMNS[table]), ROLLUP_SOURCE[table]
        if len(chosen) > _Keys.LIMIT:
            conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text(f"INSERT INTO {table} ({columns}) " + ROLLUPS[table].format(source=source, where="")))
            continue
        if not chosen:
            continue
        listed, params = bindparam("keys", expanding=True), {"keys": sorted(chosen)}
        conn.execute(text(f"DELETE FROM {table} WHERE {column} IN :keys").bindparams(listed), params)
        select = ROLLUPS[table].format(source=source, where=f"WHERE a.{column} IN :keys")
        conn.execute(text(f"INSERT INTO {table} ({columns}) {select}").bindparams(listed), params)


def write_sums(conn: Connection, sums: list[tuple[str, pd.DataFrame, pd.DataFrame]]) -> None:
    """Write what `RunAggregates.take` computed: rows of dates no earlier flush wrote by plain
    bulk insert, the others added to the stored rows."""
    from database.bulk import load_frame

    for table, new, seen in sums:
        load_frame(conn, table, new)
        add_rows(conn, table, seen)


def add_rows(conn: Connection, table: str, frame: pd.DataFrame) -> None:
    """Add `frame`'s sums to the rows of `table` with the same key; insert rows that are new."""
    from database.bulk import insert_frame, load_frame

    if frame.empty:
        return
    keys = [c.name for c in METADATA.tables[table].primary_key.columns]
    sums = [c for c in frame.columns if c not in keys]
    added = ", ".join(f"{c} = {_combined(conn, table, c)}" for c in sums)
    upsert = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}"
    if conn.dialect.name == "postgresql":
        stage = f"stg_{table}"
        conn.execute(text(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table}) ON COMMIT DROP"))
        conn.execute(text(f"TRUNCATE {stage}"))
        load_frame(conn, stage, frame)
        columns = ", ".join(frame.columns)
        conn.execute(text(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {stage} {upsert}"))
    else:
        insert_frame(conn, table, frame, suffix=upsert)


# SQLite adds REALs in binary floating point: rounding to the 3 stored decimals keeps sums exact.
_ADD = {c: "ROUND({}, 3)" for c in ("revenue", "return_revenue", "sale_revenue", "adjustment_revenue")}


def _combined(conn: Connection, table: str, column: str) -> str:
    """A stored row's `column` with the same row of the new sums added (a last date: the later one)."""
    if column == "last_date_key":
        later = "GREATEST" if conn.dialect.name == "postgresql" else "MAX"
        return f"{later}({table}.{column}, excluded.{column})"
    return _ADD.get(column, "{}").format(f"{table}.{column} + excluded.{column}")


PRODUCT_KEY = ["date_key", "product_key"]
MONTH_PRODUCT_KEY = ["month_key", "product_key"]
CUSTOMER_KEY = ["date_key", "customer_key"]
INVOICE_KEY = ["date_key", "customer_key", "invoice_no"]
CUSTOMER_SUMS = [
    *CUSTOMER_KEY, "lines", "units", "revenue", "return_units", "return_revenue", "sale_units", "sale_revenue", "adjustment_revenue",
]  # fmt: skip


def dates_of_customers(conn: Connection, customer_keys: list[int]) -> set[int]:
    """Dates with facts of these customer versions (their country aggregates may move)."""
    if not customer_keys:
        return set()
    sql = text("SELECT DISTINCT date_key FROM fact_sales WHERE customer_key IN :keys").bindparams(bindparam("keys", expanding=True))
    return {d for (d,) in conn.execute(sql, {"keys": customer_keys})}
