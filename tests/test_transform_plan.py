"""The transform stage without a database: `plan_chunk` on small cleaned chunks and a `KeyState`."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from config.settings import load_settings
from etl.aggregates import RunAggregates
from etl.cleaning import Cleaner
from etl.transform import KeyState, no_versions, plan_chunk
from utils.vocabulary import SOURCE_COLUMNS

RUN = 7
_rows = iter(range(1, 1_000_000))


def sale(
    code: str = "85123A", when: str = "2010-12-01 08:26:00", customer: str = "17850", country: str = "United Kingdom", **fields: str
) -> dict:
    """A raw row; each row gets its own description unless one is given (no two rows are duplicates)."""
    n = next(_rows)
    row = {"InvoiceNo": f"5{n:05d}", "StockCode": code, "Description": f"ITEM {n}", "Quantity": "2", "InvoiceDate": when}
    return row | {"UnitPrice": "2.50", "CustomerID": customer, "Country": country} | fields


def cleaned(rows: list[dict]) -> pd.DataFrame:
    """The rows as the clean stage hands them on (all must pass the rules)."""
    settings = load_settings(default_files=(), environ={}, overrides=None)
    frame = pd.DataFrame(rows, columns=list(SOURCE_COLUMNS), dtype="str")
    result = Cleaner(settings, now=datetime(2012, 1, 1)).clean(frame, np.arange(1, len(rows) + 1, dtype=np.int64))
    assert result.rejected.empty, result.rejected["reasons"].tolist()
    return result.accepted


def state(**fields) -> KeyState:
    """A KeyState with the aggregates flushed every chunk (a plan then carries its sums)."""
    return KeyState(aggregates=RunAggregates(flush_every=1), **fields)


def versions(*rows: tuple[int, str, str, str | None, str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_key", "customer_id", "effective_date", "expiry_date", "country"])
    for col in ("effective_date", "expiry_date"):
        frame[col] = pd.to_datetime(frame[col]).astype("datetime64[us]")
    return frame if len(frame) else no_versions()


def test_new_products_and_customers_get_consecutive_keys_after_the_state():
    keys = state(product_keys={"OLD": 4}, next_product_key=5, next_customer_key=11, next_sales_key=101)
    plan = plan_chunk(
        cleaned([sale("B", customer="2"), sale("A", customer="1"), sale("OLD", customer="1"), sale("B", customer="")]), keys, RUN
    )
    assert dict(zip(plan.new_products["stock_code"], plan.new_products["product_key"], strict=True)) == {"A": 5, "B": 6}
    assert keys.product_keys == {"OLD": 4, "A": 5, "B": 6}
    assert dict(zip(plan.customer_inserts["customer_id"], plan.customer_inserts["customer_key"], strict=True)) == {"1": 11, "2": 12}
    assert plan.customer_inserts["created_run_id"].tolist() == [RUN, RUN]
    assert (keys.next_product_key, keys.next_customer_key, keys.next_sales_key) == (7, 13, 105)
    facts = plan.facts.sort_values("source_row")
    assert facts["sales_key"].tolist() == [101, 102, 103, 104]
    assert facts["product_key"].tolist() == [6, 5, 4, 6]
    assert facts["customer_key"].tolist() == [12, 11, 11, -1]  # no customer: the unknown member
    assert set(facts["run_id"]) == {RUN}
    assert facts["line_total"].tolist() == [5.0] * 4


def test_a_second_chunk_continues_from_the_state_the_first_left():
    keys = state()
    plan_chunk(cleaned([sale("A", customer="1")]), keys, RUN)
    plan = plan_chunk(cleaned([sale("A", customer="1"), sale("B", customer="2")]), keys, RUN)
    assert plan.new_products[["stock_code", "product_key"]].values.tolist() == [["B", 2]]
    assert plan.customer_inserts[["customer_id", "customer_key"]].values.tolist() == [["2", 2]]
    assert plan.facts["sales_key"].tolist() == [2, 3]
    assert plan.cache_hits == {"products": (2, 1), "dates": (2, 2), "customers": (2, 1)}


def test_a_country_change_expires_the_current_version_and_inserts_one():
    keys = state(versions=versions((3, "1", "2010-11-01 10:00", None, "United Kingdom")), next_customer_key=4)
    rows = [sale(customer="1", when="2010-12-01 09:00:00"), sale(customer="1", country="France", when="2010-12-02 09:00:00")]
    plan = plan_chunk(cleaned(rows), keys, RUN)
    assert plan.customers.expire == [{"customer_key": 3, "expiry_date": datetime(2010, 12, 2, 9)}]
    inserted = plan.customer_inserts.iloc[0]
    assert (inserted["customer_key"], inserted["country"], inserted["effective_date"]) == (4, "France", pd.Timestamp("2010-12-02 09:00"))
    assert plan.facts.sort_values("source_row")["customer_key"].tolist() == [3, 4]  # each fact: the version valid at its time
    assert keys.expired == {3: 20101202}  # facts of version 3 from that date may need re-pointing
    current = keys.versions.set_index("customer_key")
    assert current.loc[3, "expiry_date"] == pd.Timestamp("2010-12-02 09:00")
    assert pd.isna(current.loc[4, "expiry_date"])


def test_a_known_products_newer_price_is_an_scd1_change_not_a_new_product():
    keys = state(product_keys={"A": 1}, next_product_key=2)
    rows = [sale("A", UnitPrice="3.00", when="2010-12-02 09:00:00"), sale("A", UnitPrice="2.75", when="2010-12-01 09:00:00")]
    plan = plan_chunk(cleaned(rows), keys, RUN)
    assert plan.new_products.empty
    assert plan.product_changes["unit_price_milli"].tolist() == [3000]  # the latest row wins
    assert keys.product_changes["unit_price_milli"].tolist() == [3000]
    plan_chunk(cleaned([sale("A", UnitPrice="3.25", when="2010-12-03 09:00:00")]), keys, RUN)
    assert keys.product_changes["unit_price_milli"].tolist() == [3250]  # folded over the run: one row per product
    assert keys.next_product_key == 2


def test_date_rows_for_new_dates_only():
    keys = state(date_keys={20101201})
    rows = [sale(when="2010-12-01 09:00:00"), sale(when="2010-12-25 09:00:00"), sale(when="2010-12-25 10:00:00")]
    plan = plan_chunk(cleaned(rows), keys, RUN)
    assert plan.dates["date_key"].tolist() == [20101225]
    assert plan.dates["created_run_id"].tolist() == [RUN]
    assert keys.date_keys == {20101201, 20101225}
    assert plan_chunk(cleaned([sale(when="2010-12-25 11:00:00")]), keys, RUN).dates.empty
    assert plan.months == [201012]


def test_aggregate_sums_by_date_and_product():
    keys = state()
    rows = [
        sale("A", when="2010-12-01 09:00:00", Quantity="2"),
        sale("A", when="2010-12-01 10:00:00", Quantity="3"),
        sale("A", when="2010-12-02 09:00:00", Quantity="1"),
        sale("RET", when="2010-12-01 09:00:00", Quantity="-1", InvoiceNo="C1"),
    ]
    plan = plan_chunk(cleaned(rows), keys, RUN)
    sums = {table: (insert, add) for table, insert, add in plan.sums}
    products = sums["agg_daily_product"][0].set_index(["date_key", "product_key"])
    a, b = keys.product_keys["A"], keys.product_keys["RET"]
    assert products.loc[(20101201, a), ["lines", "units", "revenue"]].tolist() == [2, 5, 12.5]
    assert products.loc[(20101202, a), ["lines", "units", "revenue"]].tolist() == [1, 1, 2.5]
    assert products.loc[(20101201, b), ["return_lines", "return_units", "return_revenue"]].tolist() == [1, -1, -2.5]
    assert len(products) == 3
    assert sums["agg_daily_product"][1].empty  # no earlier flush wrote these dates: nothing to add to
    assert keys.touched_dates == {20101201, 20101202}


def test_no_sums_until_the_fold_is_due():
    keys = KeyState()  # the run's fold: sums every 4 chunks
    assert plan_chunk(cleaned([sale()]), keys, RUN).sums == []


def test_an_empty_chunk_plans_nothing():
    keys = state(product_keys={"A": 1}, next_product_key=2, next_sales_key=9)
    plan = plan_chunk(cleaned([sale("A")]).iloc[:0], keys, RUN)
    assert plan.dates.empty and plan.new_products.empty and plan.customer_inserts.empty and plan.facts.empty
    assert (plan.customers.inserts, plan.customers.expire, plan.customers.extend) == ([], [], [])
    assert (keys.next_product_key, keys.next_sales_key) == (2, 9)


def test_england_bank_holidays_match_the_holidays_package():
    """The UK module loaded on its own gives the package's own days and names (1995-2035)."""
    import holidays

    from etl.transform import england_bank_holidays

    years = list(range(1995, 2036))
    assert dict(england_bank_holidays(years)) == dict(holidays.country_holidays("GB", subdiv="ENG", years=years))
