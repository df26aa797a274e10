"""Transformation rules that are not plain SQL: the date dimension and SCD2 version plans.

Pure functions over small frames (dates, customer change points), unit-tested on their own.
The loader feeds them from the staging tables and writes their results set-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

import holidays
import pandas as pd


def date_rows(date_keys: list[int]) -> pd.DataFrame:
    """dim_date rows for YYYYMMDD keys, with England-and-Wales bank holidays flagged."""
    days = pd.to_datetime(pd.Series(sorted(set(date_keys)), dtype="int64").astype(str), format="%Y%m%d")
    years = sorted(set(days.dt.year.tolist())) or [2000]
    bank = holidays.country_holidays("GB", subdiv="ENG", years=years)
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
    for row in existing.itertuples(index=False):
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
