"""The synthetic sales generator: layout, determinism, the real extract's profile, flat memory."""

from __future__ import annotations

import gzip
import hashlib
import re
import tracemalloc
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sampledata.generator import GenerateResult, generate_sales
from utils.vocabulary import SOURCE_COLUMNS

HEADER = ",".join(SOURCE_COLUMNS)
PROFILE_ROWS = 60_000
NON_MERCH = {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "DCGSSBOY", "DCGSSGIRL", "B"}


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _near(value: float, target: float, tolerance: float = 0.3) -> bool:
    return abs(value - target) <= tolerance * target


@pytest.fixture(scope="module")
def profile(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateResult, pd.DataFrame]:
    result = generate_sales(tmp_path_factory.mktemp("gen") / "sales.csv", PROFILE_ROWS, seed=7)
    return result, _read(result.path)


# -- layout and determinism ----------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    one = generate_sales(tmp_path / "a.csv", 5_000, seed=3).path
    two = generate_sales(tmp_path / "b.csv", 5_000, seed=3).path
    other = generate_sales(tmp_path / "c.csv", 5_000, seed=4).path
    assert _digest(one) == _digest(two)
    assert _digest(one) != _digest(other)


def test_batch_size_does_not_change_the_file(tmp_path: Path) -> None:
    big = generate_sales(tmp_path / "big.csv", 8_000, batch_rows=50_000).path
    small = generate_sales(tmp_path / "small.csv", 8_000, batch_rows=97).path
    assert _digest(big) == _digest(small)


@pytest.mark.parametrize("rows", [1, 2, 999, 12_345])
def test_exact_row_count_header_and_readable(tmp_path: Path, rows: int) -> None:
    result = generate_sales(tmp_path / "nested" / "dir" / "out.csv", rows, batch_rows=1_000)
    raw = result.path.read_bytes()
    assert raw.startswith((HEADER + "\n").encode())
    assert b"\r" not in raw
    assert raw.endswith(b"\n")
    df = _read(result.path)
    assert list(df.columns) == list(SOURCE_COLUMNS)
    assert len(df) == rows == result.rows
    assert result.invoices == df["InvoiceNo"].nunique()
    assert result.seconds >= 0
    assert not list(result.path.parent.glob("*.part"))


def test_zero_rows_writes_only_the_header(tmp_path: Path) -> None:
    result = generate_sales(tmp_path / "empty.csv", 0)
    assert result.path.read_text(encoding="utf-8") == HEADER + "\n"
    assert (result.rows, result.invoices, result.customers, result.duplicates) == (0, 0, 0, 0)


def test_gzip_output_is_readable_and_reproducible(tmp_path: Path) -> None:
    first = generate_sales(tmp_path / "a.csv.gz", 3_000).path
    again = generate_sales(tmp_path / "b.csv.gz", 3_000).path
    plain = generate_sales(tmp_path / "c.csv", 3_000).path
    assert gzip.decompress(first.read_bytes()) == plain.read_bytes()
    assert _digest(first) == _digest(again)
    assert len(_read(first)) == 3_000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": -1}, "rows must be 0 or more, got -1"),
        ({"rows": 10, "days": 0}, "days must be at least 1, got 0"),
        ({"rows": 10, "batch_rows": 0}, "batch_rows must be at least 1, got 0"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate_sales(tmp_path / "x.csv", **kwargs)
    assert not (tmp_path / "x.csv").exists()


def test_short_window_and_closed_days_still_work(tmp_path: Path) -> None:
    # 2011-12-24 .. 12-26: Christmas closure and a Saturday only; trading happens anyway.
    df = _read(generate_sales(tmp_path / "x.csv", 500, start=date(2011, 12, 24), days=3).path)
    dates = pd.to_datetime(df["InvoiceDate"])
    assert dates.min() >= pd.Timestamp("2011-12-24")
    assert dates.max() < pd.Timestamp("2011-12-27")


# -- the profile of the real extract ---------------------------------------------------------------


def test_result_counts_match_the_file(profile) -> None:
    result, df = profile
    assert result.rows == len(df) == PROFILE_ROWS
    assert result.invoices == df["InvoiceNo"].nunique()
    assert result.customers == df.loc[df["CustomerID"] != "", "CustomerID"].nunique()
    assert result.duplicates == int(df.duplicated().sum())
    assert result.customers >= 0.95 * min(4400, PROFILE_ROWS // 120)  # nearly every customer buys


def test_row_fractions(profile) -> None:
    _, df = profile
    qty = df["Quantity"].astype(int)
    price = df["UnitPrice"].astype(float)
    cancel = df["InvoiceNo"].str.startswith("C")
    fractions = {
        "cancellation rows": (cancel.mean(), 0.0171),
        "negative quantity off C invoices": (((qty < 0) & ~cancel).mean(), 0.0025),
        "rows without customer": ((df["CustomerID"] == "").mean(), 0.249),
        "zero prices": ((price == 0).mean(), 0.0046),
        "exact repeats": (df.duplicated().mean(), 0.0097),
        "empty descriptions": ((df["Description"] == "").mean(), 0.0027),
        "trailing spaces": (df["Description"].str.endswith(" ").mean(), 0.20),
        "non-merchandise codes": (df["StockCode"].isin(NON_MERCH).mean() + df["StockCode"].str.startswith("gift_").mean(), 0.005),
        "United Kingdom": ((df["Country"] == "United Kingdom").mean(), 0.90),
    }
    wrong = {name: round(got, 5) for name, (got, want) in fractions.items() if not _near(got, want)}
    assert not wrong, wrong
    assert _near(len(df) / df["InvoiceNo"].nunique(), 20.9)


def test_invoices_share_their_header_fields(profile) -> None:
    _, df = profile
    per_invoice = df.groupby("InvoiceNo")[["InvoiceDate", "CustomerID", "Country"]].nunique()
    assert (per_invoice == 1).all().all()
    number = df["InvoiceNo"].str.extract(r"^([CA]?)(\d{6})$")
    assert number.notna().all().all()
    first_rows = df.drop_duplicates("InvoiceNo")
    counter = first_rows["InvoiceNo"].str[-6:].astype(int)
    assert counter.iloc[0] == 536365
    assert counter.is_monotonic_increasing and counter.is_unique


def test_dates_ordered_in_window_and_seasonal(profile) -> None:
    _, df = profile
    assert df["InvoiceDate"].str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
    assert (df["InvoiceDate"].to_numpy()[1:] >= df["InvoiceDate"].to_numpy()[:-1]).all()
    stamps = pd.to_datetime(df["InvoiceDate"])
    start = pd.Timestamp("2010-12-01")
    assert stamps.min() >= start
    assert stamps.max() < start + timedelta(days=374)
    assert stamps.dt.hour.between(7, 20).all()
    assert (stamps.dt.day_of_week == 5).sum() == 0  # no Saturday trading
    days = stamps.dt.normalize()
    per_day = days.value_counts()
    november = per_day[per_day.index.month == 11].mean()
    april = per_day[per_day.index.month == 4].mean()
    assert november > 1.4 * april


def test_cancellations_refund_earlier_purchases(profile) -> None:
    _, df = profile
    df = df.assign(row=np.arange(len(df)))
    cancel = df["InvoiceNo"].str.startswith("C")
    refunds = df[cancel]
    assert (refunds["Quantity"].astype(int) < 0).all()
    assert (refunds["UnitPrice"].astype(float) > 0).all()
    assert (refunds["CustomerID"] != "").all()
    goods = refunds[~refunds["StockCode"].isin(NON_MERCH)]
    bought = df[~cancel & (df["CustomerID"] != "")].groupby(["CustomerID", "StockCode"])["row"].min()
    first = goods.join(bought.rename("first"), on=["CustomerID", "StockCode"])
    assert (first["first"] < first["row"]).all()


def test_write_offs_are_free_and_anonymous(profile) -> None:
    _, df = profile
    write_off = (df["Quantity"].astype(int) < 0) & ~df["InvoiceNo"].str.startswith("C")
    assert write_off.any()
    assert (df.loc[write_off, "UnitPrice"] == "0").all()
    assert (df.loc[write_off, "CustomerID"] == "").all()
    assert (df.loc[df["Description"] == "", "UnitPrice"] == "0").all()


def test_a_customer_moves_country_once_cleanly(profile) -> None:
    _, df = profile
    known = df[df["CustomerID"] != ""]
    countries = known.groupby("CustomerID")["Country"].nunique()
    movers = countries[countries > 1].index
    assert len(movers) >= 1
    for customer in movers:
        seq = known.loc[known["CustomerID"] == customer, ["InvoiceDate", "Country"]]
        changes = (seq["Country"] != seq["Country"].shift()).sum() - 1
        assert changes == 1, customer
        old, new = seq["Country"].iloc[0], seq["Country"].iloc[-1]
        assert seq.loc[seq["Country"] == old, "InvoiceDate"].max() <= seq.loc[seq["Country"] == new, "InvoiceDate"].min()


def test_field_formats(profile) -> None:
    _, df = profile
    assert df["UnitPrice"].str.fullmatch(r"-?\d+(\.\d\d?)?|0\.001").all()
    ids = df.loc[df["CustomerID"] != "", "CustomerID"]
    assert ids.str.fullmatch(r"\d{5}").all()
    assert ids.astype(int).between(12346, 18287).all()
    codes = df["StockCode"]
    merchandise = codes.str.fullmatch(r"\d{5}[A-Za-z]?")
    assert merchandise.mean() > 0.99
    assert (codes[merchandise].str.upper() != codes[merchandise]).any()  # lower-case twins
    assert df["Description"].str.contains("£").any()
    assert df["Description"].str.contains(",").any()  # quoted on the way out
    assert df["Quantity"].astype(int).max() >= 500
    assert 20 <= df["Country"].nunique() <= 38
    described = df[df["Description"] != ""]
    assert (described.groupby("StockCode")["Description"].nunique() > 1).any()


def test_bad_debt_adjustments(tmp_path: Path) -> None:
    df = _read(generate_sales(tmp_path / "x.csv", 100_000, seed=11).path)
    adjust = df[df["InvoiceNo"].str.startswith("A")]
    assert len(adjust) >= 1
    assert (adjust["StockCode"] == "B").all()
    assert (adjust["Description"] == "Adjust bad debt").all()
    assert (adjust["Quantity"] == "1").all()
    assert (adjust["CustomerID"] == "").all()


# -- memory ----------------------------------------------------------------------------------------


def _peak(path: Path, rows: int) -> int:
    tracemalloc.start()
    try:
        generate_sales(path, rows, batch_rows=10_000)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    small = _peak(tmp_path / "small.csv", 20_000)
    large = _peak(tmp_path / "large.csv", 200_000)
    assert large < 1.5 * small
