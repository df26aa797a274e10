"""Date dimension rows, SCD2 customer plans, and the loader's SCD candidate selection."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd
import pytest

from etl.transform import (
    Version,
    as_date,
    date_rows,
    first_appearances,
    first_countries,
    is_in,
    latest_products,
    plan_customer,
    plan_customers,
)

# --- date dimension -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dates() -> pd.DataFrame:
    keys = [20110429, 20101225, 20101201, 20110101, 20101226, 20110103, 20101227, 20101225, 20111231, 20110430]
    return date_rows(keys).set_index("date_key", drop=False)


def test_date_rows_one_row_per_key_sorted(dates):
    assert dates["date_key"].tolist() == [20101201, 20101225, 20101226, 20101227, 20110101, 20110103, 20110429, 20110430, 20111231]
    assert dates["date_key"].dtype == np.int64


def test_date_rows_calendar_fields(dates):
    xmas = dates.loc[20101225]
    assert xmas["full_date"] == date(2010, 12, 25)
    assert (xmas["day"], xmas["month"], xmas["quarter"], xmas["year"]) == (25, 12, 4, 2010)
    assert xmas["day_name"] == "Saturday"
    assert xmas["month_name"] == "December"
    assert dates.loc[20110429, "quarter"] == 2
    assert dates.loc[20110101, "quarter"] == 1


def test_date_rows_weekday_monday_is_one(dates):
    assert dates.loc[20101227, "weekday"] == 1  # Monday
    assert dates.loc[20101201, "weekday"] == 3  # Wednesday
    assert dates.loc[20101225, "weekday"] == 6  # Saturday
    assert dates.loc[20101226, "weekday"] == 7  # Sunday
    assert dates["is_weekend"].tolist() == [False, True, True, False, True, False, False, True, True]


def test_date_rows_iso_week(dates):
    assert dates.loc[20101201, "iso_week"] == 48
    assert dates.loc[20101226, "iso_week"] == 51  # Sunday closes week 51
    assert dates.loc[20101227, "iso_week"] == 52
    assert dates.loc[20110101, "iso_week"] == 52  # belongs to ISO week 52 of 2010
    assert dates.loc[20110103, "iso_week"] == 1
    assert dates.loc[20111231, "iso_week"] == 52


def test_date_rows_bank_holidays(dates):
    flagged = dates.loc[dates["is_uk_bank_holiday"], "date_key"].tolist()
    assert flagged == [20101225, 20101226, 20101227, 20110101, 20110103, 20110429]
    assert dates.loc[20101225, "holiday_name"] == "Christmas Day"
    wedding = dates.loc[20110429, "holiday_name"]
    assert "Wedding" in wedding
    assert "William" in wedding
    assert pd.isna(dates.loc[20110430, "holiday_name"])
    assert pd.isna(dates.loc[20101201, "holiday_name"])
    assert not dates.loc[20110430, "is_uk_bank_holiday"]


def test_date_rows_empty():
    assert len(date_rows([])) == 0


def test_as_date():
    assert as_date(20110429) == date(2011, 4, 29)


# --- SCD2 plans -----------------------------------------------------------------------------------

T1, T2, T3, T4 = (datetime(2011, 1, 5, 10), datetime(2011, 2, 1, 9), datetime(2011, 3, 1, 8), datetime(2011, 4, 1, 7))


def test_first_appearances():
    points = [(T3, "UK"), (T2, "FR"), (T1, "UK"), (T4, "DE")]
    assert first_appearances(points) == [(T1, "UK"), (T2, "FR"), (T4, "DE")]
    assert first_appearances(points, {"UK"}) == [(T2, "FR"), (T4, "DE")]


def test_new_customer_one_country():
    plan = plan_customer("17850", [], [(T2, "United Kingdom"), (T1, "United Kingdom")])
    assert plan.inserts == [
        {"customer_id": "17850", "country": "United Kingdom", "effective_date": T1, "expiry_date": None, "is_current": True}
    ]
    assert plan.expire == []
    assert plan.extend == []


def test_new_customer_two_countries():
    plan = plan_customer("17850", [], [(T3, "France"), (T1, "United Kingdom"), (T2, "United Kingdom"), (T4, "France")])
    assert plan.inserts == [
        {"customer_id": "17850", "country": "United Kingdom", "effective_date": T1, "expiry_date": T3, "is_current": False},
        {"customer_id": "17850", "country": "France", "effective_date": T3, "expiry_date": None, "is_current": True},
    ]
    assert plan.expire == []
    assert plan.extend == []


def test_returning_to_an_earlier_country_is_not_a_new_version():
    plan = plan_customer("1", [], [(T1, "A"), (T2, "B"), (T3, "A")])
    assert [(r["country"], r["effective_date"], r["expiry_date"], r["is_current"]) for r in plan.inserts] == [
        ("A", T1, T2, False),
        ("B", T2, None, True),
    ]


def test_existing_current_version_and_new_country_later():
    versions = [Version(7, T1, None, "United Kingdom")]
    plan = plan_customer("17850", versions, [(T2, "United Kingdom"), (T4, "France"), (T3, "France")])
    assert plan.expire == [{"customer_key": 7, "expiry_date": T3}]
    assert plan.inserts == [{"customer_id": "17850", "country": "France", "effective_date": T3, "expiry_date": None, "is_current": True}]
    assert plan.extend == []


def test_existing_history_expires_only_the_current_version():
    versions = [Version(9, T2, None, "France"), Version(8, T1, T2, "United Kingdom")]  # unsorted on purpose
    plan = plan_customer("1", versions, [(T3, "Germany"), (T4, "Spain")])
    assert plan.expire == [{"customer_key": 9, "expiry_date": T3}]
    assert [(r["country"], r["effective_date"], r["expiry_date"], r["is_current"]) for r in plan.inserts] == [
        ("Germany", T3, T4, False),
        ("Spain", T4, None, True),
    ]


def test_points_earlier_than_first_version_extend_it():
    versions = [Version(8, T2, T3, "United Kingdom"), Version(9, T3, None, "France")]
    plan = plan_customer("1", versions, [(T1, "United Kingdom"), (T4, "France")])
    assert plan.extend == [{"customer_key": 8, "effective_date": T1}]
    assert plan.inserts == []
    assert plan.expire == []


def test_points_with_known_countries_change_nothing():
    versions = [Version(8, T1, T3, "United Kingdom"), Version(9, T3, None, "France")]
    plan = plan_customer("1", versions, [(T2, "United Kingdom"), (T4, "United Kingdom"), (T4, "France"), (T1, "United Kingdom")])
    assert (plan.inserts, plan.expire, plan.extend) == ([], [], [])


def test_new_country_before_current_version_does_not_rewrite_history():
    versions = [Version(8, T1, T3, "United Kingdom"), Version(9, T3, None, "France")]
    plan = plan_customer("1", versions, [(T2, "Germany")])
    assert (plan.inserts, plan.expire, plan.extend) == ([], [], [])


def test_two_countries_at_one_instant_open_one_version():
    """One invoice with two countries: the second has no moment of its own (it broke the unique
    (customer_id, effective_date) key of dim_customers)."""
    plan = plan_customer("1", [], [(T1, "B"), (T1, "A"), (T2, "A")])
    assert [(r["country"], r["effective_date"], r["expiry_date"], r["is_current"]) for r in plan.inserts] == [("A", T1, None, True)]


def test_new_country_at_the_start_of_the_current_version_opens_no_version():
    """A later extract with another country on a line at the very start of the current version
    (found by the crash trials: the load failed with a unique violation on dim_customers)."""
    versions = [Version(7, T1, None, "United Kingdom")]
    plan = plan_customer("13224", versions, [(T1, "Iceland"), (T2, "Iceland")])
    assert (plan.inserts, plan.expire, plan.extend) == ([], [], [])


def test_plan_customers_over_frames():
    existing = pd.DataFrame(
        {
            "customer_key": [10, 11],
            "customer_id": ["100", "200"],
            "effective_date": [pd.Timestamp(T2), pd.Timestamp(T1)],
            "expiry_date": [pd.NaT, pd.NaT],
            "country": ["United Kingdom", "France"],
        }
    )
    points = pd.DataFrame(
        {
            "customer_id": ["300", "100", "100", "200", "300"],
            "transaction_datetime": pd.to_datetime([T2, T4, T1, T3, T1]),
            "country": ["Spain", "Germany", "United Kingdom", "France", "Italy"],
        }
    )
    plan = plan_customers(existing, points)
    assert plan.extend == [{"customer_key": 10, "effective_date": T1}]
    assert plan.expire == [{"customer_key": 10, "expiry_date": T4}]
    assert plan.inserts == [
        {"customer_id": "100", "country": "Germany", "effective_date": T4, "expiry_date": None, "is_current": True},
        {"customer_id": "300", "country": "Italy", "effective_date": T1, "expiry_date": T2, "is_current": False},
        {"customer_id": "300", "country": "Spain", "effective_date": T2, "expiry_date": None, "is_current": True},
    ]


def test_plan_customers_nothing_to_do():
    existing = pd.DataFrame(
        {"customer_key": [1], "customer_id": ["1"], "effective_date": [pd.Timestamp(T1)], "expiry_date": [pd.NaT], "country": ["UK"]}
    )
    points = pd.DataFrame({"customer_id": ["1"], "transaction_datetime": pd.to_datetime([T2]), "country": ["UK"]})
    plan = plan_customers(existing, points)
    assert (plan.inserts, plan.expire, plan.extend) == ([], [], [])


# --- loader candidate selection ---------------------------------------------------------------------


def _sales(rows: list[tuple]) -> pd.DataFrame:
    codes, descriptions, times, source_rows = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "stock_code": pd.Series(codes, dtype="str"),
            "description": pd.Series(descriptions, dtype="str"),
            "transaction_datetime": pd.to_datetime(list(times)).astype("datetime64[us]"),
            "source_row": np.array(source_rows, dtype=np.int64),
        }
    )


def test_latest_products_latest_description_wins():
    rows = _sales(
        [
            ("A", "OLD NAME", T1, 1),
            ("A", "NEW NAME", T3, 2),
            ("A", "MIDDLE NAME", T2, 3),
            ("B", "B NAME", T2, 4),
            ("B", "", T4, 5),  # later, but no description
            ("C", "", T1, 6),
            ("C", "", T2, 7),  # no row with a description: the latest row
        ]
    )
    out = latest_products(rows).sort_values("stock_code")
    assert out["stock_code"].tolist() == ["A", "B", "C"]
    assert out["description"].tolist() == ["NEW NAME", "B NAME", ""]
    assert out["source_row"].tolist() == [2, 4, 7]


def test_latest_products_missing_description_treated_as_empty():
    rows = _sales([("A", "NAME", T1, 1), ("A", None, T2, 2)])
    out = latest_products(rows)
    assert out["description"].tolist() == ["NAME"]
    assert out["source_row"].tolist() == [1]


def test_latest_products_ties_broken_by_source_row():
    rows = _sales([("A", "SECOND", T1, 9), ("A", "FIRST", T1, 3), ("A", "THIRD", T1, 12), ("A", "EARLIER", datetime(2010, 1, 1), 20)])
    out = latest_products(rows)
    assert out["description"].tolist() == ["THIRD"]
    assert out["source_row"].tolist() == [12]


def test_first_countries_first_time_per_customer_and_country():
    rows = pd.DataFrame(
        {
            "customer_id": pd.Series(["1", "1", "1", None, "2", "1", "2"], dtype="str"),
            "country": pd.Series(["UK", "FR", "UK", "DE", "UK", "FR", "UK"], dtype="str"),
            "transaction_datetime": pd.to_datetime([T3, T4, T1, T1, T2, T2, T2]).astype("datetime64[us]"),
            "source_row": np.arange(1, 8, dtype=np.int64),
        }
    )
    out = first_countries(rows)
    got = sorted(zip(out["customer_id"], out["country"], out["transaction_datetime"], out["source_row"], strict=True))
    assert got == [
        ("1", "FR", pd.Timestamp(T2), 6),
        ("1", "UK", pd.Timestamp(T1), 3),
        ("2", "UK", pd.Timestamp(T2), 5),  # equal times: the earlier row wins
    ]
    assert out["transaction_datetime"].is_monotonic_increasing


def test_is_in_matches_pandas_isin_for_text_columns() -> None:
    """The loader's membership test for stock codes and customers answers like Series.isin."""
    values = pd.Series(["85123A", None, "POST", "85123a", "", "22423"], dtype="str")
    pool = {"85123A": 1, "POST": 2, "": 3}
    assert is_in(values, pool).tolist() == values.isin(list(pool)).tolist() == [True, False, True, False, True, False]
    assert is_in(values, []).tolist() == [False] * 6
    assert is_in(pd.Series([None, None], dtype=object), ["POST"]).tolist() == [False, False]
