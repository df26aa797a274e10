"""The load-time fold of a run's new facts into aggregate sums, chunk by chunk (the tables,
their rollup SQL and the writes live in `database.aggregates`)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from sqlalchemy import Connection

from database.aggregates import COLUMNS, CUSTOMER_KEY, CUSTOMER_SUMS, INVOICE_KEY, MONTH_PRODUCT_KEY, PRODUCT_KEY, write_sums
from etl.identity import DuplicateTracker

_SALES_SUMS = ["lines", "invoices", "units", "revenue", "return_revenue"]  # agg_monthly_sales and agg_customer_totals
COUNTED_WINDOW = 250_000  # invoice keys kept in memory by a run's aggregates (8 bytes each)


class RunAggregates:
    """One run's new facts, aggregated chunk by chunk and added to the aggregate tables every
    `flush_every` chunks, so memory follows the chunk size and not the run's size.

    Dates in `skip_dates` (they held facts before the run) are left out: the loader recomputes
    them from fact_sales at the end. Sums are added to the stored rows; invoice counts are
    distinct counts, so an invoice is counted once per (date, customer version) and kind, in
    whichever flush sees it first (a run-long set of the invoices counted, spilled by date).
    """

    def __init__(self, skip_dates: np.ndarray | None = None, flush_every: int = 4) -> None:
        self._skip = np.asarray(skip_dates if skip_dates is not None else [], dtype=np.int64)
        self.flush_every = flush_every
        self._products: list[pd.DataFrame] = []
        self._customers: list[pd.DataFrame] = []
        self._invoices: list[pd.DataFrame] = []
        self._monthly: pd.DataFrame | None = None  # the run's sums by (month, product), in thousandths
        self._sales: pd.DataFrame | None = None  # the run's sums by month (agg_monthly_sales), in thousandths
        self._customer_totals: pd.DataFrame | None = None  # by customer version, with its last date, in thousandths
        # Hashes of (date, customer, invoice, kind) already counted, grouped by date: beyond the
        # tracker's window they go to its spill file, read back only for dates counted before.
        self._counted = DuplicateTracker(window=COUNTED_WINDOW)
        self.dates_written: set[int] = set()

    def close(self) -> None:
        """Delete the spill file of the invoices counted, if there is one."""
        self._counted.close()

    def add(self, facts: pd.DataFrame) -> None:
        """Fold in a chunk of facts (date_key, product_key, customer_key, invoice_no, quantity,
        line_total_milli, transaction_type); `due` once `flush_every` chunks are folded."""
        if len(self._skip):
            facts = facts[~np.isin(facts["date_key"].to_numpy(), self._skip)]
        if facts.empty:
            return
        kind = facts["transaction_type"].to_numpy()
        is_return, is_sale = kind == "return", kind == "sale"
        quantity, milli = facts["quantity"].to_numpy(), facts["line_total_milli"].to_numpy()
        frame = pd.DataFrame(
            {
                "date_key": facts["date_key"].to_numpy(),
                "product_key": facts["product_key"].to_numpy(),
                "customer_key": facts["customer_key"].to_numpy(),
                "lines": 1,
                "units": quantity,
                "revenue": milli,
                "return_lines": is_return.astype(np.int64),
                "return_units": np.where(is_return, quantity, 0),
                "return_revenue": np.where(is_return, milli, 0),
                "sale_units": np.where(is_sale, quantity, 0),
                "sale_revenue": np.where(is_sale, milli, 0),
                "adjustment_revenue": np.where(kind == "adjustment", milli, 0),
            }
        )
        self._products.append(frame[list(COLUMNS["agg_daily_product"])].groupby(PRODUCT_KEY, as_index=False).sum())
        self._customers.append(frame[CUSTOMER_SUMS].groupby(CUSTOMER_KEY, as_index=False).sum())
        invoices = pd.DataFrame(
            {"date_key": frame["date_key"], "customer_key": frame["customer_key"], "invoice_no": facts["invoice_no"].to_numpy(),
             "sale": is_sale, "return": is_return}
        )  # fmt: skip
        self._invoices.append(invoices.groupby(INVOICE_KEY, as_index=False).max())

    @property
    def due(self) -> bool:
        """Whether enough chunks are folded to write them (`take`, then `write_sums`)."""
        return len(self._products) >= self.flush_every

    def flush(self, conn: Connection) -> None:
        """Add the folded sums to agg_daily_product, agg_daily_customer and agg_daily_orders."""
        write_sums(conn, self.take())

    def take(self) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
        """The folded sums as (table, rows to insert, rows to add to stored ones), and an empty
        fold. Computing only: the writes can run on another thread (`write_sums`), in order."""
        if not self._products:
            return []
        products = pd.concat(self._products).groupby(PRODUCT_KEY, as_index=False).sum()
        self._fold_months(products)
        customers = pd.concat(self._customers).groupby(CUSTOMER_KEY, as_index=False).sum()
        invoices = pd.concat(self._invoices).groupby(INVOICE_KEY, as_index=False).max()
        self._products, self._customers, self._invoices = [], [], []
        customers = customers.merge(self._new_invoice_counts(invoices), on=CUSTOMER_KEY, how="left")
        self._fold_customers(customers)
        for col in ("revenue", "return_revenue"):
            products[col] = products[col] / 1000
        for col in ("revenue", "return_revenue", "sale_revenue", "adjustment_revenue"):
            customers[col] = customers[col] / 1000
        # Rows of dates no earlier flush wrote cannot meet a stored row: plain bulk insert. Only
        # the others (in a file in time order, the dates that straddle a flush) are added.
        written = np.fromiter(self.dates_written, dtype=np.int64, count=len(self.dates_written))
        sums = []
        for table, frame in (
            ("agg_daily_product", products),
            ("agg_daily_customer", customers[list(COLUMNS["agg_daily_customer"])]),
            ("agg_daily_orders", customers[list(COLUMNS["agg_daily_orders"])]),
        ):
            seen = np.isin(frame["date_key"].to_numpy(), written)
            sums.append((table, frame[~seen], frame[seen]))
        self.dates_written.update(products["date_key"].unique().tolist())
        return sums

    def _fold_months(self, products: pd.DataFrame) -> None:
        """Add daily product sums to the run's monthly ones (months x products: small)."""
        monthly = products.assign(month_key=products["date_key"] // 100).drop(columns="date_key")
        if self._monthly is not None:
            monthly = pd.concat([self._monthly, monthly])
        self._monthly = monthly.groupby(MONTH_PRODUCT_KEY, as_index=False).sum()

    def _fold_customers(self, customers: pd.DataFrame) -> None:
        """Add daily customer sums (invoices counted once) to the run's sums by month and by
        customer version (months, and customer versions: small)."""
        sales = customers[_SALES_SUMS].groupby(customers["date_key"] // 100).sum().rename_axis("month_key").reset_index()
        totals = customers[["customer_key", *_SALES_SUMS]].assign(last_date_key=customers["date_key"])
        if self._sales is not None:
            sales = pd.concat([self._sales, sales])
            totals = pd.concat([self._customer_totals, totals])
        self._sales = sales.groupby("month_key", as_index=False).sum()
        self._customer_totals = totals.groupby("customer_key", as_index=False).agg(
            {"last_date_key": "max", **dict.fromkeys(_SALES_SUMS, "sum")}
        )

    def rollups(self) -> dict[str, pd.DataFrame]:
        """agg_monthly_sales, agg_customer_totals and agg_product_totals rows of this run's facts
        alone: what the run adds to those tables when all its facts are on dates the warehouse
        had no facts on before (the caller knows when), in each table's columns."""
        products = None if self._monthly is None else self._monthly.drop(columns="month_key").groupby("product_key", as_index=False).sum()
        frames = {"agg_monthly_sales": self._sales, "agg_customer_totals": self._customer_totals, "agg_product_totals": products}
        return {table: _table_rows(table, frame) for table, frame in frames.items()}

    def monthly_products(self, months: Iterable[int]) -> pd.DataFrame:
        """agg_monthly_product rows of `months` from this run's facts alone: the whole rows of a
        month in which the warehouse had no facts before the run (the caller knows which)."""
        chosen = None if self._monthly is None else self._monthly[self._monthly["month_key"].isin([int(m) for m in months])]
        return _table_rows("agg_monthly_product", chosen)

    def _new_invoice_counts(self, invoices: pd.DataFrame) -> pd.DataFrame:
        """Per (date, customer version): invoices, orders (with a sale line) and return invoices
        not counted by an earlier flush."""
        base = pd.util.hash_pandas_object(invoices[INVOICE_KEY], index=False).to_numpy(dtype=np.uint64)
        counts = invoices[CUSTOMER_KEY].copy()
        dates = invoices["date_key"].to_numpy(dtype=np.uint64)
        for column, salt, member in (
            ("invoices", 1, np.ones(len(invoices), dtype=bool)),
            ("orders", 2, invoices["sale"].to_numpy(dtype=bool)),
            ("return_invoices", 3, invoices["return"].to_numpy(dtype=bool)),
        ):
            new = np.zeros(len(invoices), dtype=np.int64)
            keys = base[member] ^ np.uint64(salt)
            new[member] = self._counted.occurrences(keys, dates[member]) == 1
            counts[column] = new
        return counts.groupby(CUSTOMER_KEY, as_index=False).sum()


def _table_rows(table: str, sums: pd.DataFrame | None) -> pd.DataFrame:
    """Sums folded in thousandths as rows of `table`: its columns, revenues in currency units."""
    columns = list(COLUMNS[table])
    if sums is None or sums.empty:
        return pd.DataFrame(columns=columns)
    rows = sums.copy()
    for col in ("revenue", "return_revenue"):
        rows[col] = rows[col] / 1000
    return rows[columns].reset_index(drop=True)
