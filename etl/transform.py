"""The transform stage: from a cleaned chunk and the warehouse's current keys, the chunk's plan.

`plan_chunk` takes the rows of a chunk the warehouse does not hold yet and a `KeyState` (the
keys the warehouse holds, read once by the loader when the run starts, and moved on chunk after
chunk) and returns a `ChunkPlan`: new dim_date rows, new products with their surrogate keys and
changes to known products (SCD type 1), customer versions to insert, expire and extend (SCD
type 2) with their keys, the facts with every key, and the aggregate sums due. No database:
the loader (etl/loader.py) looks up what the warehouse already holds before, and writes the
plan after, inside the run's one transaction.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from etl.aggregates import RunAggregates
from etl.cleaning import PRICE_SCALE

Timed = Callable[[str], AbstractContextManager[None]]  # a stopwatch's `timed`


def england_bank_holidays(years: list[int]) -> dict[date, str]:
    """England-and-Wales bank holidays of `years`, as `holidays.country_holidays("GB", subdiv="ENG")`.

    Importing any country of the holidays package first imports its `countries` package, which
    imports every country it knows (about 280 modules): a run's dates need only the UK. Its module
    is loaded on its own; a holidays release laid out differently falls back to the package's
    own lookup (tests/test_transform_plan.py checks both give the same days and names)."""
    import holidays  # only when a run has new dates: a run without any does not pay for it

    try:
        location = importlib.util.find_spec("holidays.countries").submodule_search_locations[0]
        spec = importlib.util.spec_from_file_location("holidays.countries.united_kingdom", Path(location) / "united_kingdom.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.UnitedKingdom(subdiv="ENG", years=years)
    except (ImportError, AttributeError, OSError, TypeError):
        return holidays.country_holidays("GB", subdiv="ENG", years=years)


def date_rows(date_keys: list[int]) -> pd.DataFrame:
    """dim_date rows for YYYYMMDD keys, with England-and-Wales bank holidays flagged."""
    days = pd.to_datetime(pd.Series(sorted(set(date_keys)), dtype="int64").astype(str), format="%Y%m%d")
    years = sorted(set(days.dt.year.tolist())) or [2000]
    bank = england_bank_holidays(years)
    iso = days.dt.isocalendar()
    names = [bank.get(d.date()) for d in days]
    return pd.DataFrame(
        {
            "date_key": (days.dt.year * 10000 + days.dt.month * 100 + days.dt.day).astype("int64"),
            "full_date": days.dt.date,
            "day": days.dt.day,
            "day_name": days.dt.day_name(),
            "weekday": iso["day"].astype("int64"),
            "iso_week": iso["week"].astype("int64"),
            "month": days.dt.month,
            "month_name": days.dt.month_name(),
            "quarter": days.dt.quarter,
            "year": days.dt.year,
            "is_weekend": iso["day"].astype("int64") >= 6,
            "is_uk_bank_holiday": [n is not None for n in names],
            "holiday_name": names,
        }
    )


@dataclass(frozen=True)
class Version:
    """One existing dim_customers row."""

    key: int
    effective: datetime
    expiry: datetime | None
    country: str


@dataclass
class Scd2Plan:
    """Changes to dim_customers: versions to insert, to expire, and first versions to extend back."""

    inserts: list[dict] = field(default_factory=list)
    expire: list[dict] = field(default_factory=list)
    extend: list[dict] = field(default_factory=list)


def first_appearances(points: list[tuple[datetime, str]], seen: set[str] | frozenset[str] = frozenset()) -> list[tuple[datetime, str]]:
    """The first (time, country) of each country not in `seen`, in time order. A version needs a
    moment of its own: a country first seen at the same instant as the one before it (one invoice
    with two countries) opens no version, as a country first seen before the current version."""
    out: list[tuple[datetime, str]] = []
    known = set(seen)
    for when, country in sorted(points):
        if country not in known:
            known.add(country)
            if not out or when > out[-1][0]:
                out.append((when, country))
    return out


def _chain(customer_id: str, runs: list[tuple[datetime, str]], last_expiry: datetime | None, current_last: bool) -> list[dict]:
    rows = []
    for i, (when, country) in enumerate(runs):
        expiry = runs[i + 1][0] if i + 1 < len(runs) else last_expiry
        rows.append(
            {
                "customer_id": customer_id,
                "country": country,
                "effective_date": when,
                "expiry_date": expiry,
                "is_current": current_last and i + 1 == len(runs),
            }
        )
    return rows


def plan_customer(customer_id: str, versions: list[Version], points: list[tuple[datetime, str]]) -> Scd2Plan:
    """Plan SCD2 changes for one customer from its versions and its new (time, country) points.

    A country the customer has not had before opens a new version, effective from the first
    transaction with that value; going back to an earlier country is not a new version (the
    fact keeps pointing to the version valid at its time). Transactions before the first
    version's start move that start back; an older extract cannot rewrite closed history.
    """
    plan = Scd2Plan()
    if not versions:
        plan.inserts = _chain(customer_id, first_appearances(points), None, True)
        return plan
    versions = sorted(versions, key=lambda v: v.effective)
    first, current = versions[0], versions[-1]
    earliest = min(points)[0]
    if earliest < first.effective:
        plan.extend.append({"customer_key": first.key, "effective_date": earliest})
    # strictly after: a version starting where the current one starts would have no time of its own
    new = [p for p in first_appearances(points, {v.country for v in versions}) if p[0] > current.effective]
    if new:
        plan.expire.append({"customer_key": current.key, "expiry_date": new[0][0]})
        plan.inserts += _chain(customer_id, new, None, True)
    return plan


def plan_customers(existing: pd.DataFrame, points: pd.DataFrame) -> Scd2Plan:
    """SCD2 plan for every customer in `points` (customer_id, transaction_datetime, country)."""
    by_customer: dict[str, list[Version]] = {}
    for row in versions_of(existing, points["customer_id"]).itertuples(index=False):
        by_customer.setdefault(row.customer_id, []).append(Version(row.customer_key, row.effective_date, row.expiry_date, row.country))
    new_points: dict[str, list[tuple[datetime, str]]] = {}
    times = pd.to_datetime(points["transaction_datetime"]).dt.to_pydatetime()
    for customer_id, when, country in zip(points["customer_id"], times, points["country"], strict=True):
        new_points.setdefault(customer_id, []).append((when, country))
    plan = Scd2Plan()
    for customer_id in sorted(new_points):
        part = plan_customer(customer_id, by_customer.get(customer_id, []), new_points[customer_id])
        plan.inserts += part.inserts
        plan.expire += part.expire
        plan.extend += part.extend
    return plan


def as_date(key: int) -> date:
    """YYYYMMDD integer to a date."""
    return date(key // 10000, key // 100 % 100, key % 100)


# -- a chunk's plan ------------------------------------------------------------------------------

VERSION_COLUMNS = ["customer_key", "customer_id", "effective_date", "expiry_date", "country"]
PRODUCT_SOURCE = ["stock_code", "description", "unit_price_milli", "transaction_datetime", "product_category", "source_row"]
PRODUCT_COLUMNS = ["product_key", "stock_code", "description", "unit_price", "transaction_datetime", "product_category"]


def no_versions() -> pd.DataFrame:
    """An empty frame of customer versions (VERSION_COLUMNS), as a new warehouse holds."""
    return pd.DataFrame(
        {
            "customer_key": pd.Series(dtype="int64"),
            "customer_id": pd.Series(dtype="object"),
            "effective_date": pd.Series(dtype="datetime64[us]"),
            "expiry_date": pd.Series(dtype="datetime64[us]"),
            "country": pd.Series(dtype="object"),
        }
    )


@dataclass
class KeyState:
    """The warehouse's keys as the run has planned them so far, in memory: read once when the run
    starts (the loader's `prepare`), then moved on by `plan_chunk` chunk after chunk.

    `versions` holds the customer versions (VERSION_COLUMNS) as the database will hold them once
    the planned writes are done, of every customer of the chunks planned so far (the loader adds
    a chunk's customers met for the first time before planning it); `expired` maps each version this run expired to the first date
    whose facts may need re-pointing; `product_changes` the run's latest values of products known
    before their chunk (SCD1, written once at the end); `touched_dates` the dates of the run's facts.
    """

    product_keys: dict[str, int] = field(default_factory=dict)
    date_keys: set[int] = field(default_factory=set)
    versions: pd.DataFrame = field(default_factory=no_versions)
    next_product_key: int = 1
    next_customer_key: int = 1
    next_sales_key: int = 1
    preexisting_dates: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))  # dim_date before the run, sorted
    aggregates: RunAggregates = field(default_factory=RunAggregates)
    expired: dict[int, int] = field(default_factory=dict)
    product_changes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PRODUCT_SOURCE))
    touched_dates: set[int] = field(default_factory=set)


@dataclass
class ChunkPlan:
    """What one chunk adds to the warehouse, keyed: the loader only writes it."""

    dates: pd.DataFrame  # new dim_date rows (with created_run_id)
    new_products: pd.DataFrame  # PRODUCT_COLUMNS, keyed
    product_changes: pd.DataFrame  # the chunk's latest rows of products known before it (PRODUCT_SOURCE)
    customers: Scd2Plan  # versions to expire and extend (by key) and to insert
    customer_inserts: pd.DataFrame  # plan.inserts keyed (VERSION_COLUMNS, is_current, created_run_id)
    facts: pd.DataFrame  # the chunk's facts with their keys, unit_price and line_total, and run_id
    sums: list = field(default_factory=list)  # aggregate sums due (RunAggregates.take), else empty
    months: list[int] = field(default_factory=list)  # YYYYMM of the facts (the partitions they need)
    cache_hits: dict[str, tuple[int, int]] = field(default_factory=dict)  # per dimension: (lookups, hits before the chunk)


def plan_chunk(fresh: pd.DataFrame, state: KeyState, run_id: int, timed: Timed | None = None) -> ChunkPlan:
    """Plan a chunk of cleaned rows the warehouse does not hold yet (`fresh`): its new dates,
    products and customer versions with their surrogate keys, the facts' keys and the aggregate
    sums due. Moves `state` on as if the plan were written. No database: `timed`, if given, only
    measures the steps (the run's stopwatch)."""
    timed = timed or _untimed
    cache_hits = key_cache_hits(fresh, state)
    with timed("dim_date"):
        dates = _plan_dates(fresh, state, run_id)
    with timed("dim_products"):
        new_products, product_changes = _plan_products(fresh, state)
    with timed("dim_customers"):
        customers, customer_inserts = _plan_customers(fresh, state, run_id)
    with timed("keys"):
        facts = with_keys(fresh, state, run_id)
    state.touched_dates.update(facts["date_key"].unique().tolist())
    sums = []
    with timed("aggregates"):
        state.aggregates.add(facts)
        if state.aggregates.due:
            sums = state.aggregates.take()
    months = sorted(set((facts["date_key"] // 100).unique().tolist()))
    return ChunkPlan(dates, new_products, product_changes, customers, customer_inserts, facts, sums, months, cache_hits)


@contextmanager
def _untimed(step: str) -> Iterator[None]:
    yield


def _plan_dates(fresh: pd.DataFrame, state: KeyState, run_id: int) -> pd.DataFrame:
    new_keys = sorted(set(fresh["date_key"].unique().tolist()) - state.date_keys)
    if not new_keys:  # date_rows looks the bank holidays up, even for no dates
        return pd.DataFrame(columns=["date_key", "created_run_id"])
    state.date_keys.update(new_keys)
    return date_rows(new_keys).assign(created_run_id=run_id)


def _plan_products(fresh: pd.DataFrame, state: KeyState) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Key the chunk's new products now (its facts need them); fold its changes to known products
    into `state.product_changes`, written once at the end. Updating the same rows chunk after
    chunk left PostgreSQL a chain of row versions per product that no vacuum can remove inside
    the run's transaction (docs/scaling.md)."""
    candidates = latest_products(fresh[PRODUCT_SOURCE])
    known = is_in(candidates["stock_code"], state.product_keys) if len(candidates) else np.zeros(0, dtype=bool)
    changes = candidates[known]
    if len(changes):
        folded = changes if state.product_changes.empty else pd.concat([state.product_changes, changes])
        state.product_changes = latest_products(folded)
    new = staged_products(candidates[~known])
    new.insert(0, "product_key", np.arange(state.next_product_key, state.next_product_key + len(new), dtype=np.int64))
    state.next_product_key += len(new)
    state.product_keys.update(zip(new["stock_code"].tolist(), new["product_key"].tolist(), strict=True))
    return new, changes.reset_index(drop=True)


def staged_products(candidates: pd.DataFrame) -> pd.DataFrame:
    """Product rows as the staging table takes them (price in currency units, not thousandths)."""
    staged = candidates.assign(unit_price=candidates["unit_price_milli"] / PRICE_SCALE)
    return staged[[c for c in PRODUCT_COLUMNS if c in staged.columns]].reset_index(drop=True)


def _plan_customers(fresh: pd.DataFrame, state: KeyState, run_id: int) -> tuple[Scd2Plan, pd.DataFrame]:
    """SCD2 versions for the chunk, keyed, and applied to `state.versions` at once."""
    points = first_countries(fresh[["customer_id", "country", "transaction_datetime"]])
    plan = plan_customers(state.versions, points) if len(points) else Scd2Plan()
    inserts = pd.DataFrame(plan.inserts, columns=[*VERSION_COLUMNS[1:], "is_current"])
    inserts.insert(0, "customer_key", np.arange(state.next_customer_key, state.next_customer_key + len(inserts), dtype=np.int64))
    state.next_customer_key += len(inserts)
    for col in ("effective_date", "expiry_date"):
        inserts[col] = pd.to_datetime(inserts[col]).astype("datetime64[us]")
    if plan.inserts or plan.expire or plan.extend:
        state.versions = apply_plan(state.versions, plan, inserts)
    for e in plan.expire:
        state.expired[int(e["customer_key"])] = int(pd.Timestamp(e["expiry_date"]).strftime("%Y%m%d"))
    return plan, inserts.assign(created_run_id=run_id)


def key_cache_hits(fresh: pd.DataFrame, state: KeyState) -> dict[str, tuple[int, int]]:
    """Key look-ups of a chunk (lookups, hits) answered by the keys as they were before the chunk
    (misses are keys the chunk itself adds)."""
    with_customer = fresh["customer_id"].notna()
    known_customers = set(versions_of(state.versions, fresh.loc[with_customer, "customer_id"])["customer_id"].tolist())
    return {
        "products": (len(fresh), int(is_in(fresh["stock_code"], state.product_keys).sum())),
        "dates": (len(fresh), int(fresh["date_key"].isin(state.date_keys).sum())),
        "customers": (int(with_customer.sum()), int(is_in(fresh.loc[with_customer, "customer_id"], known_customers).sum())),
    }


def with_keys(fresh: pd.DataFrame, state: KeyState, run_id: int) -> pd.DataFrame:
    """The chunk's facts with their product, customer and sales keys."""
    facts = fresh.assign(
        run_id=run_id,
        unit_price=fresh["unit_price_milli"] / PRICE_SCALE,
        line_total=fresh["line_total_milli"] / PRICE_SCALE,
        product_key=fresh["stock_code"].map(state.product_keys),
        customer_key=customer_keys(fresh, state.versions),
    )
    facts["sales_key"] = np.arange(state.next_sales_key, state.next_sales_key + len(facts), dtype=np.int64)
    state.next_sales_key += len(facts)
    if facts["product_key"].isna().any() or facts["customer_key"].isna().any():
        raise RuntimeError("internal error: a fact has no dimension key; the run was rolled back")
    return facts.astype({"product_key": "int64", "customer_key": "int64"})


def customer_keys(fresh: pd.DataFrame, versions: pd.DataFrame) -> pd.Series:
    """Per row, the key of the customer version valid at its transaction time (-1: no customer)."""
    keys = pd.Series(-1.0, index=fresh.index)
    known = fresh[fresh["customer_id"].notna()]
    if known.empty:
        return keys
    left = known[["customer_id", "transaction_datetime"]].reset_index().sort_values("transaction_datetime", kind="stable")
    right = versions_of(versions, known["customer_id"]).sort_values("effective_date", kind="stable")
    matched = pd.merge_asof(
        left, right[["customer_id", "effective_date", "customer_key"]],
        left_on="transaction_datetime", right_on="effective_date", by="customer_id", direction="backward",
    )  # fmt: skip
    keys.loc[matched["index"].to_numpy()] = matched["customer_key"].to_numpy(dtype="float64")
    return keys


def apply_plan(versions: pd.DataFrame, plan: Scd2Plan, inserts: pd.DataFrame) -> pd.DataFrame:
    """The customer versions (VERSION_COLUMNS) after `plan`, as the database holds them once it is written."""
    out = versions.copy()
    for column, changes in (("expiry_date", plan.expire), ("effective_date", plan.extend)):
        if changes:
            new = pd.Series([pd.Timestamp(c[column]) for c in changes], index=[c["customer_key"] for c in changes])
            hit = out["customer_key"].isin(new.index)
            out.loc[hit, column] = out.loc[hit, "customer_key"].map(new).astype("datetime64[us]")
    if not inserts.empty:
        out = pd.concat([out, inserts[list(versions.columns)]], ignore_index=True) if len(out) else inserts[list(versions.columns)].copy()
    return out


def is_in(values: pd.Series, pool: Iterable[str]) -> np.ndarray:
    """values.isin(pool) for a text column (a missing value is in no pool). Each distinct value is
    looked up in the pool (a dict or set as it is): the cost follows the chunk's distinct values,
    not the size of the pool (every product or customer of the warehouse)."""
    positions, distinct = pd.factorize(values)
    if not len(distinct):
        return np.zeros(len(values), dtype=bool)
    members = pool if isinstance(pool, dict | set | frozenset) else set(pool)
    found = np.fromiter((v in members for v in distinct), dtype=bool, count=len(distinct))
    return (positions >= 0) & found[positions]


def versions_of(versions: pd.DataFrame, customer_ids: pd.Series) -> pd.DataFrame:
    """The rows of `versions` of these customers: planning and keying a chunk look at no other
    customer, so they need not go through every version the warehouse holds."""
    if versions.empty:
        return versions
    return versions[is_in(versions["customer_id"], set(customer_ids.dropna().tolist()))]


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
