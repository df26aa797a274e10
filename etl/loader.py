"""The load stage: each cleaned chunk goes into the star schema in bulk, inside the run's transaction.

`prepare` reads the warehouse's keys once (a `KeyState`: max + 1 of each key, under the warehouse
lock). Per chunk, on the loader thread: lines the warehouse already holds are set aside by their
identity (exactly once: this needs the database), the versions of customers the run meets for the
first time are read, the rest go to `plan_chunk` (etl/transform.py:
dates, SCD1 products, SCD2 customer versions, surrogate keys, aggregate sums, all in memory, so no
chunk waits for the database to hand keys back), and the plan becomes the chunk's writes
(dimension rows, aggregate sums, COPY / executemany of the facts and quarantined rows). Those run
on a writer thread, in order, while the loader thread plans the next chunk; the connection is
never used by two threads at once (`conn` waits for the writer). A run that begins on an empty
PostgreSQL fact table COPYs the facts without indexes and builds them in `finalize`, before anything reads
the fact (database/fact_indexes.py). At the end (`finalize`): the
changes to known products in one upsert, the key sequences, facts of customers whose versions
changed during the run re-pointed in one UPDATE (a country change seen in a later chunk moves the
facts after it to the new version), and the aggregates refreshed: dates that held facts before
are summed again from the fact; a run whose facts are all on new dates (a day's extract) adds
its own monthly and all-dates sums to the stored rows.

Why not COPY every fact into a staging table and INSERT ... SELECT from it: that second pass
over every fact costs more than the COPY itself (docs/performance.md) and cannot overlap with
cleaning; loading the fact directly overlaps with the next chunks.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd
from sqlalchemy import Connection, bindparam, text

from database.aggregates import add_rows, write_monthly_products, write_sums
from database.aggregates import refresh as refresh_aggregates
from database.bulk import load_arrow, load_frame, to_arrow
from database.fact_indexes import FactIndex, build_fact_indexes, drop_fact_indexes
from database.models import SQLITE_TS_FORMAT
from database.partitions import ensure_month, existing_partitions, is_partitioned, partition_name
from etl.aggregates import RunAggregates
from etl.stopwatch import Stopwatch
from etl.transform import VERSION_COLUMNS, ChunkPlan, KeyState, Scd2Plan, plan_chunk, staged_products

_STG_PRODUCTS = """CREATE TEMPORARY TABLE stg_products (
    product_key INTEGER, stock_code TEXT NOT NULL, description TEXT, unit_price NUMERIC(18, 3) NOT NULL, transaction_datetime TIMESTAMP NOT NULL,
    product_category TEXT NOT NULL)"""
_STG_LINE_KEYS = "CREATE TEMPORARY TABLE stg_line_keys (date_key INTEGER NOT NULL, line_id BIGINT NOT NULL)"
PROBE_RATIO = 4  # look lines up by key once their dates hold this many times more facts than the chunk
_FACT_COLUMNS = [
    "sales_key", "line_id", "customer_key", "product_key", "date_key", "invoice_no", "quantity", "unit_price", "line_total",
    "transaction_datetime", "transaction_type", "source_row", "run_id",
]  # fmt: skip
_QUARANTINE_COLUMNS = [
    "run_id",
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
SELECT stock_code, NULLIF(description, ''), unit_price, transaction_datetime, product_category,
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

_INSERT_PRODUCTS = """
INSERT INTO dim_products (product_key, stock_code, description, current_unit_price, price_as_of, category, is_merchandise,
                          created_run_id, updated_run_id)
SELECT product_key, stock_code, NULLIF(description, ''), unit_price, transaction_datetime, product_category,
       product_category = 'merchandise', :run, :run
FROM stg_products
"""

_SAVE_PRODUCTS = """
INSERT INTO dim_products_history (run_id, product_key, description, current_unit_price, price_as_of, category, is_merchandise, updated_run_id)
SELECT :run, p.product_key, p.description, p.current_unit_price, p.price_as_of, p.category, p.is_merchandise, p.updated_run_id
FROM dim_products p JOIN stg_products s ON s.stock_code = p.stock_code
WHERE p.created_run_id <> :run AND s.transaction_datetime >= p.price_as_of
  AND (COALESCE(NULLIF(s.description, ''), p.description, '') <> COALESCE(p.description, '')
       OR s.unit_price <> p.current_unit_price OR s.product_category <> p.category)
"""

_SAVE_CUSTOMERS = """
INSERT INTO dim_customers_history (run_id, customer_key, effective_date, expiry_date, is_current, expired_run_id)
SELECT :run, customer_key, effective_date, expiry_date, is_current, expired_run_id FROM dim_customers
WHERE customer_key IN :keys AND (created_run_id IS NULL OR created_run_id <> :run)
"""

# Facts still pointing at a version this run expired, dated after its new expiry, move to the
# version valid at their time (a country change first seen in a later chunk or load).
REPOINT_FACTS = """
UPDATE fact_sales SET customer_key = (
    SELECT v.customer_key FROM dim_customers v
    WHERE v.customer_id = old.customer_id AND v.effective_date <= fact_sales.transaction_datetime
      AND (v.expiry_date IS NULL OR fact_sales.transaction_datetime < v.expiry_date))
FROM dim_customers old
WHERE old.customer_key = fact_sales.customer_key AND fact_sales.customer_key IN :old_keys
  AND fact_sales.date_key >= :from_date AND fact_sales.transaction_datetime >= old.expiry_date
RETURNING fact_sales.date_key
"""


# The serial sequences of the dimensions' keys continue after the keys the loader assigned.
_SYNC_SEQUENCES = [
    f"SELECT setval(pg_get_serial_sequence('{table}', '{key}'), GREATEST(COALESCE(MAX({key}), 0) + 1, 1), false) FROM {table}"
    for table, key in (("dim_products", "product_key"), ("dim_customers", "customer_key"))
]

Write = tuple[str, Callable[[Connection], object]]  # (stage, what to run on the connection)


@dataclass
class LoadCounts:
    """What the run changed."""

    facts_loaded: int = 0
    facts_already_loaded: int = 0
    quarantined: int = 0
    quarantine_already_held: int = 0
    quarantine_by_reasons: Counter = field(default_factory=Counter)  # rows by their reasons as stored ('a;b' for two)
    dimensions: dict[str, dict[str, int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    key_cache: dict[str, dict[str, float]] = field(default_factory=dict)


class WarehouseLoader:
    """Loads cleaned chunks into the warehouse on one connection, inside the caller's transaction."""

    def __init__(self, conn: Connection, run_id: int, stopwatch: Stopwatch | None = None) -> None:
        self._conn = conn
        self.run_id = run_id
        self.stopwatch = stopwatch or Stopwatch()
        self.counts = LoadCounts(timings=self.stopwatch.timings)
        self.keys = KeyState()  # read from the warehouse in prepare()
        self.quarantine_held = 0  # lines earlier runs quarantined
        self._quarantine_ids: np.ndarray | None = None  # all of them, read once a run's chunks are as many
        self.facts_empty = True
        self._versions_held = False  # dim_customers holds a customer's version (read in prepare)
        self._customers_read: set[str] = set()  # customers whose versions keys.versions holds
        self.deferred_indexes: list[FactIndex] = []  # dropped for a first load, built in finalize
        self.partitions: set[str] | None = None
        self.dates_inserted = 0
        self.customer_changes = Counter()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rdp-write")
        self._writing: Future | None = None

    @property
    def conn(self) -> Connection:
        """The run's connection, once the writes handed to the writer thread are done."""
        self._settle()
        return self._conn

    def _settle(self) -> None:
        """Wait for the writer; its error (a failed COPY, say) is raised here, on the loader thread."""
        if self._writing is not None:
            pending, self._writing = self._writing, None
            for step, seconds in pending.result().items():
                self.stopwatch.add(step, seconds)

    def _submit(self, writes: list[Write]) -> None:
        self._settle()
        if writes:
            self._writing = self._writer.submit(_run_writes, self._conn, writes)

    def close(self) -> None:
        """Wait for the writer thread and stop it (a failing run rolls back only after this)."""
        try:
            if self._writing is not None:
                self._writing.exception()  # the run is failing already: its own error is the one to report
                self._writing = None
        finally:
            self._writer.shutdown(wait=True)
            self.keys.aggregates.close()

    def _sql(self, sql: str, **params: object) -> int:
        return self.conn.execute(text(sql), params).rowcount

    def prepare(self) -> None:
        """Create the run's staging tables and read the warehouse's keys."""
        with self.stopwatch.timed("prepare"):
            for table, ddl in (("stg_products", _STG_PRODUCTS), ("stg_line_keys", _STG_LINE_KEYS)):
                self.conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
                self.conn.execute(text(ddl))
            self.keys = self._read_keys()
            self.quarantine_held = int(self.conn.execute(text("SELECT COUNT(*) FROM etl_quarantine")).scalar_one())
            self.facts_empty = self.conn.execute(text("SELECT 1 FROM fact_sales LIMIT 1")).first() is None
            if self.facts_empty and self.conn.dialect.name == "postgresql":
                # A first load COPYs the facts without indexes and builds them once after the
                # last chunk (database/fact_indexes.py); a rollback restores them as they were.
                self.deferred_indexes = drop_fact_indexes(self.conn)
            if is_partitioned(self.conn):
                self.partitions = existing_partitions(self.conn)

    def _read_keys(self) -> KeyState:
        def next_key(table: str, key: str) -> int:
            return int(self.conn.execute(text(f"SELECT COALESCE(MAX({key}), 0) + 1 FROM {table}")).scalar_one())

        dates = np.array(sorted(k for (k,) in self.conn.execute(text("SELECT date_key FROM dim_date"))), dtype=np.int64)
        self._versions_held = (
            self.conn.execute(text("SELECT 1 FROM dim_customers WHERE customer_id IS NOT NULL LIMIT 1")).first() is not None
        )
        return KeyState(
            product_keys=dict(self.conn.execute(text("SELECT stock_code, product_key FROM dim_products")).all()),
            date_keys=set(dates.tolist()),
            next_product_key=next_key("dim_products", "product_key"),
            next_customer_key=max(1, next_key("dim_customers", "customer_key")),  # the unknown member is -1
            next_sales_key=next_key("fact_sales", "sales_key"),
            preexisting_dates=dates,
            aggregates=RunAggregates(dates),
        )

    def load(self, accepted: pd.DataFrame, rejected: pd.DataFrame) -> None:
        """Load one chunk: set aside what the warehouse holds, plan the rest, hand the writes to the writer."""
        with self.stopwatch.timed("exactly_once"):
            known = self._known_facts(accepted)
            rejected_known = self._known_quarantine(rejected)
        self.counts.facts_already_loaded += int(known.sum())
        self.counts.quarantine_already_held += int(rejected_known.sum())
        fresh = accepted[~known]
        with self.stopwatch.timed("dim_customers"):
            self._read_versions(fresh["customer_id"])
        plan = plan_chunk(fresh, self.keys, self.run_id, self.stopwatch.timed)
        self._count(plan)
        writes = self._writes(plan)
        del plan
        with self.stopwatch.timed("quarantine"):
            quarantine = rejected[~rejected_known].assign(run_id=self.run_id)
            writes.append(("write_quarantine", partial(load_arrow, table="etl_quarantine", data=to_arrow(quarantine[_QUARANTINE_COLUMNS]))))
            self.counts.quarantined += len(quarantine)
            self.counts.quarantine_by_reasons.update(quarantine["reasons"].value_counts().to_dict())
        self._submit(writes)

    def _read_versions(self, customer_ids: pd.Series) -> None:
        """Add to the run's customer versions those of the chunk's customers it has not met yet:
        planning needs no other, so a day's extract does not read every version the warehouse
        holds. A customer met once is never read again; the run's own changes to it are in
        `keys.versions` from then on."""
        wanted = set(pd.unique(customer_ids.dropna()).tolist()) - self._customers_read
        if not wanted or not self._versions_held:
            return
        self._customers_read |= wanted
        sql = f"SELECT {', '.join(VERSION_COLUMNS)} FROM dim_customers WHERE customer_id IN :ids ORDER BY customer_key"
        rows = _select_in(self.conn, sql, sorted(wanted))
        if not rows:
            return
        versions = pd.DataFrame([tuple(r) for r in rows], columns=VERSION_COLUMNS)
        for col in ("effective_date", "expiry_date"):
            versions[col] = pd.to_datetime(versions[col]).astype("datetime64[us]")
        held = self.keys.versions
        self.keys.versions = versions if held.empty else pd.concat([held, versions], ignore_index=True)

    def _count(self, plan: ChunkPlan) -> None:
        self.counts.facts_loaded += len(plan.facts)
        self.dates_inserted += len(plan.dates)
        self.customer_changes.update(
            {"inserted": len(plan.customers.inserts), "expired": len(plan.customers.expire), "extended": len(plan.customers.extend)}
        )
        for name, (lookups, hits) in plan.cache_hits.items():
            stats = self.counts.key_cache.setdefault(name, {"lookups": 0, "hits": 0})
            stats["lookups"] += lookups
            stats["hits"] += hits

    def _writes(self, plan: ChunkPlan) -> list[Write]:
        """A chunk's plan as writes for the writer thread, in the order the tables need them."""
        writes: list[Write] = []
        if len(plan.dates):
            writes.append(("write_dim_date", partial(load_frame, table="dim_date", frame=plan.dates)))
        if len(plan.new_products):
            writes.append(("write_dim_products", partial(_insert_products, staged=plan.new_products, run=self.run_id)))
        customers = plan.customers
        if customers.inserts or customers.expire or customers.extend:
            writes.append(
                ("write_dim_customers", partial(_write_customers, plan=customers, inserts=plan.customer_inserts, run=self.run_id))
            )
        if plan.sums:
            writes.append(("write_aggregates", partial(write_sums, sums=plan.sums)))
        if self.partitions is not None:
            for month in plan.months:
                if partition_name(month) not in self.partitions:
                    writes.append(("write_partitions", partial(ensure_month, month=month)))
                    self.partitions.add(partition_name(month))
        with self.stopwatch.timed("fact_sales"):
            writes.append(("write_fact_sales", partial(load_arrow, table="fact_sales", data=to_arrow(plan.facts[_FACT_COLUMNS]))))
        return writes

    def finalize(self) -> LoadCounts:
        """Write the run's changes to known products, re-point facts of customers whose versions
        changed, refresh the aggregates; return the run's counts."""
        keys, timed = self.keys, self.stopwatch.timed
        moved_dates: set[int] = set()
        self._settle()
        with timed("fact_indexes"):  # before anything below reads the fact
            build_fact_indexes(self.conn, self.deferred_indexes)
            self.deferred_indexes = []
        with timed("dim_products"):
            self._apply_product_changes()
            if self.conn.dialect.name == "postgresql":
                for sql in _SYNC_SEQUENCES:
                    self.conn.execute(text(sql))
        with timed("repoint_facts"):
            if keys.expired:
                params = {"old_keys": sorted(keys.expired), "from_date": min(keys.expired.values())}
                moved = self.conn.execute(text(REPOINT_FACTS).bindparams(bindparam("old_keys", expanding=True)), params)
                moved_dates = {d for (d,) in moved}
        with timed("aggregates"):
            recompute = set(np.intersect1d(list(keys.touched_dates), keys.preexisting_dates).tolist()) | moved_dates
            keys.aggregates.flush(self.conn)
            written = {d // 100 for d in keys.aggregates.dates_written}
            # A month without facts before the run, and none to recompute, is all in memory: its
            # product rows are written as they are, not summed again in SQL from the daily ones.
            fresh = written - {int(d) // 100 for d in keys.preexisting_dates} - {d // 100 for d in recompute}
            write_monthly_products(self.conn, keys.aggregates.monthly_products(fresh))
            if recompute:
                refresh_aggregates(self.conn, recompute, months=written - fresh, products_written=fresh)
            else:
                # Every new fact is on a date that had none and none moved: each month, customer
                # version and product gains exactly the run's sums. They are added to the stored
                # rows, not summed again from every daily row of their months and keys.
                add_rows(self.conn, "agg_monthly_product", keys.aggregates.monthly_products(written - fresh))
                for table, rows in keys.aggregates.rollups().items():
                    add_rows(self.conn, table, rows)
        with timed("dim_products"):
            row = self.conn.execute(
                text(
                    "SELECT SUM(CASE WHEN created_run_id = :run THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN updated_run_id = :run AND created_run_id <> :run THEN 1 ELSE 0 END) FROM dim_products"
                ),
                {"run": self.run_id},
            ).one()
        for stats in self.counts.key_cache.values():
            stats["hit_rate"] = round(stats["hits"] / stats["lookups"], 4) if stats["lookups"] else 1.0
        self.counts.dimensions = {
            "dim_date": {"inserted": self.dates_inserted},
            "dim_products": {"inserted": int(row[0] or 0), "updated": int(row[1] or 0)},
            "dim_customers": {k: self.customer_changes[k] for k in ("inserted", "expired", "extended")},
        }
        return self.counts

    def _apply_product_changes(self) -> None:
        """The run's latest description and price of every product known before its chunk (SCD1)."""
        changes = self.keys.product_changes
        if not changes.empty:
            _stage_products(self.conn, staged_products(changes))
            self._sql(_SAVE_PRODUCTS, run=self.run_id)
            self._sql(_UPSERT_PRODUCTS, run=self.run_id)
            self.keys.product_changes = changes.iloc[:0]

    # -- exactly once -------------------------------------------------------------------------

    def _known_facts(self, accepted: pd.DataFrame) -> np.ndarray:
        ids = accepted["line_id"].to_numpy(dtype=np.int64)
        known = self._in_quarantine(ids)
        if self.facts_empty or not len(ids):
            return known
        lo, hi = int(accepted["date_key"].min()), int(accepted["date_key"].max())
        if self._facts_held_estimate(lo, hi) <= PROBE_RATIO * len(ids):
            sql, params = "SELECT line_id FROM fact_sales WHERE date_key BETWEEN :lo AND :hi", {"lo": lo, "hi": hi}
        else:
            sql, params = self._stage_line_keys(accepted)
        existing = np.fromiter((k for (k,) in self.conn.execute(text(sql), params)), dtype=np.int64)
        return known | np.isin(ids, existing)

    def _facts_held_estimate(self, lo: int, hi: int) -> float:
        """Facts the warehouse holds on dates lo..hi, estimated from the dates it had before the run."""
        dates = self.keys.preexisting_dates
        if not len(dates):
            return 0.0
        in_range = int(np.searchsorted(dates, hi, side="right") - np.searchsorted(dates, lo, side="left"))
        return (self.keys.next_sales_key - 1) / len(dates) * in_range

    def _stage_line_keys(self, accepted: pd.DataFrame) -> tuple[str, dict]:
        """A chunk whose dates hold many facts (an extract spread over the whole history) is
        looked up by its own keys through the (date_key, line_id) index, not by reading every
        line of those dates: the cost follows the chunk, not the warehouse."""
        self.conn.execute(text("DELETE FROM stg_line_keys"))
        load_frame(self.conn, "stg_line_keys", accepted[["date_key", "line_id"]])
        if self.conn.dialect.name == "postgresql":
            self.conn.execute(text("ANALYZE stg_line_keys"))  # a temporary table has no statistics otherwise
        sql = "SELECT f.line_id FROM stg_line_keys k JOIN fact_sales f ON f.date_key = k.date_key AND f.line_id = k.line_id"
        return sql, {}

    def _in_quarantine(self, ids: np.ndarray) -> np.ndarray:
        """Which of `ids` earlier runs quarantined. A chunk much smaller than the quarantine (a
        day's extract into a big warehouse) looks its own lines up through the unique line_id
        index; otherwise every quarantined id is read once and kept for the rest of the run."""
        if not self.quarantine_held or not len(ids):
            return np.zeros(len(ids), dtype=bool)
        if self._quarantine_ids is None and PROBE_RATIO * len(ids) < self.quarantine_held:
            sql = "SELECT line_id FROM etl_quarantine WHERE line_id IN :ids AND run_id <> :run"
            found = [k for (k,) in _select_in(self.conn, sql, np.unique(ids).tolist(), run=self.run_id)]
            return np.isin(ids, np.array(found, dtype=np.int64))
        if self._quarantine_ids is None:
            rows = self.conn.execute(text("SELECT line_id FROM etl_quarantine WHERE run_id <> :run"), {"run": self.run_id})
            self._quarantine_ids = np.sort(np.fromiter((k for (k,) in rows), dtype=np.int64))
        return _isin_sorted(ids, self._quarantine_ids)

    def _known_quarantine(self, rejected: pd.DataFrame) -> np.ndarray:
        """Rejected lines an earlier run quarantined or loaded as facts. A fact is looked up on
        the one date its identity allows (the cleaner's `date_key`, -1: it matches no fact), through
        the (date_key, line_id) index, not by reading every fact's line_id."""
        ids = rejected["line_id"].to_numpy(dtype=np.int64)
        known = self._in_quarantine(ids)
        if self.facts_empty or known.all():
            return known
        # Malformed lines, put beside the cleaner's rejected rows, have none: their identity is
        # their raw text, which no fact's is.
        probe = ~known & (rejected["date_key"].fillna(-1).to_numpy(dtype=np.int64) >= 0)
        if not probe.any():
            return known
        sql, params = self._stage_line_keys(rejected.loc[probe, ["date_key", "line_id"]].astype(np.int64))
        existing = np.fromiter((k for (k,) in self.conn.execute(text(sql), params)), dtype=np.int64)
        return known | (probe & np.isin(ids, existing))


def _select_in(conn: Connection, sql: str, values: list, batch: int = 5_000, **params: object) -> list:
    """The rows of `sql`, whose `IN :ids` takes `values`, asked `batch` values at a time (one
    bound parameter each: drivers and servers cap how many a statement may carry)."""
    query = text(sql).bindparams(bindparam("ids", expanding=True))
    return [row for start in range(0, len(values), batch) for row in conn.execute(query, {"ids": values[start : start + batch], **params})]


def _run_writes(conn: Connection, writes: list[Write]) -> dict[str, float]:
    """Run a chunk's writes in order (on the writer thread); seconds per stage."""
    seconds: dict[str, float] = {}
    for stage, write in writes:
        start = time.perf_counter()
        write(conn)
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
    return seconds


def _stage_products(conn: Connection, staged: pd.DataFrame) -> None:
    conn.execute(text("DELETE FROM stg_products"))
    load_frame(conn, "stg_products", staged)


def _insert_products(conn: Connection, staged: pd.DataFrame, run: int) -> None:
    """Insert new products with the keys the loader gave them."""
    _stage_products(conn, staged)
    conn.execute(text(_INSERT_PRODUCTS), {"run": run})


def _write_customers(conn: Connection, plan: Scd2Plan, inserts: pd.DataFrame, run: int) -> None:
    """Write an SCD2 plan: keep the versions it changes in the run's history, expire, extend, insert."""
    changed_keys = sorted({e["customer_key"] for e in plan.expire + plan.extend})
    if changed_keys:
        conn.execute(text(_SAVE_CUSTOMERS).bindparams(bindparam("keys", expanding=True)), {"run": run, "keys": changed_keys})
    if plan.expire:
        conn.execute(
            text(
                "UPDATE dim_customers SET expiry_date = :expiry_date, is_current = false, expired_run_id = :run WHERE customer_key = :customer_key"
            ),
            [dict(e, run=run, expiry_date=_ts(e["expiry_date"])) for e in plan.expire],
        )
    if plan.extend:
        conn.execute(
            text("UPDATE dim_customers SET effective_date = :effective_date WHERE customer_key = :customer_key"),
            [dict(e, effective_date=_ts(e["effective_date"])) for e in plan.extend],
        )
    load_frame(conn, "dim_customers", inserts)


def _isin_sorted(values: np.ndarray, sorted_pool: np.ndarray) -> np.ndarray:
    if len(sorted_pool) == 0 or len(values) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_pool, values), len(sorted_pool) - 1)
    return sorted_pool[pos] == values


def _ts(value: object) -> str | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value).strftime(SQLITE_TS_FORMAT)
