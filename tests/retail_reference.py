"""An independent computation of the retail reports from a raw extract, with pandas.

It reads the CSV itself and applies the rules as docs/etl.md and docs/reports.md state them;
it uses no platform code and never reads the warehouse. Money is kept in exact integer
thousandths and shown in cents rounded half up, as the reports define.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd

# docs/etl.md: always required, plus Country (rules.required_fields)
REQUIRED = ["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country"]
# docs/queries.md and docs/reports.md: codes that are not goods
NON_MERCHANDISE = {"POST", "DOT", "C2", "M", "D", "S", "B", "ADJUST", "ADJUST2", "BANK CHARGES", "AMAZONFEE", "PADS", "CRUK"}
NON_MERCHANDISE_PREFIXES = ("GIFT_", "DCGS")
# docs/reports.md: the segment of each (R, FM) pair, rows R = 5..1, columns FM = 1..5
SEGMENT_GRID = {
    5: ["new", "potential loyalists", "potential loyalists", "champions", "champions"],
    4: ["promising", "potential loyalists", "potential loyalists", "champions", "champions"],
    3: ["about to sleep", "about to sleep", "need attention", "loyal", "loyal"],
    2: ["hibernating", "hibernating", "at risk", "at risk", "can't lose"],
    1: ["lost", "lost", "at risk", "at risk", "can't lose"],
}


def cents(milli: int) -> Decimal:
    """Exact thousandths as money in cents, rounded half up."""
    return (Decimal(int(milli)) / 1000).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _milli(text: str) -> float:
    """A price with at most 3 decimals in thousandths (NaN when it is not one)."""
    if not re.fullmatch(r"[+-]?(?:\d{1,12}(?:\.\d{0,3})?|\.\d{1,3})", text):
        return np.nan
    return float(Decimal(text) * 1000)


def facts(path: Path) -> pd.DataFrame:
    """The lines of the extract that the documented rules keep, with their transaction type,
    line total in thousandths and the country of the customer version valid at the sale."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    t = raw.apply(lambda s: s.str.strip())
    t["InvoiceNo"], t["StockCode"] = t["InvoiceNo"].str.upper(), t["StockCode"].str.upper()
    quantity = pd.to_numeric(t["Quantity"].where(t["Quantity"].str.fullmatch(r"[+-]?\d+"), None), errors="coerce")
    price = t["UnitPrice"].map(_milli)
    when = pd.to_datetime(t["InvoiceDate"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    customer = t["CustomerID"].str.replace(r"\.0*$", "", regex=True)
    adjustment = t["InvoiceNo"].str.startswith("A") | (t["StockCode"] == "B")
    canonical = pd.DataFrame(
        {
            "i": t["InvoiceNo"],
            "s": t["StockCode"],
            "d": t["Description"],
            "q": quantity,
            "w": when,
            "p": price,
            "c": customer,
            "n": t["Country"],
        }
    )
    rejected = (
        (t[REQUIRED] == "").any(axis=1)
        | quantity.isna() | price.isna() | when.isna()
        | (quantity == 0)
        | ((price <= 0) & ~adjustment)
        | (quantity.abs() > 1_000_000) | (price.abs() > 1_000_000_000)
        | canonical.duplicated(keep="first")
    )  # fmt: skip
    kept = pd.DataFrame(
        {
            "invoice": t["InvoiceNo"], "stock_code": t["StockCode"], "quantity": quantity, "when": when, "customer": customer,
            "source_country": t["Country"],
            "milli": quantity * price,
            "kind": np.where(adjustment, "adjustment", np.where((quantity < 0) | t["InvoiceNo"].str.startswith("C"), "return", "sale")),
        }
    )[~rejected].copy()  # fmt: skip
    kept["quantity"] = kept["quantity"].astype(np.int64)
    kept["milli"] = kept["milli"].round().astype(np.int64)
    kept["merchandise"] = ~(kept["stock_code"].isin(NON_MERCHANDISE) | kept["stock_code"].str.startswith(NON_MERCHANDISE_PREFIXES))
    kept["country"] = _version_country(kept)
    kept["date"] = kept["when"].dt.normalize()
    return kept


def _version_country(kept: pd.DataFrame) -> pd.Series:
    """SCD2 as docs/etl.md states it: a country a customer has not had before opens a version from
    that transaction on; each sale belongs to the version valid at its time. No customer: 'Unknown'."""
    known = kept[kept["customer"] != ""]
    starts = known.groupby(["customer", "source_country"], as_index=False)["when"].min().rename(columns={"when": "start"})
    ordered = known[["customer", "when"]].reset_index().sort_values("when", kind="stable")
    matched = pd.merge_asof(ordered, starts.sort_values("start"), left_on="when", right_on="start", by="customer", direction="backward")
    out = pd.Series("Unknown", index=kept.index, dtype=object)
    out.loc[matched["index"].to_numpy()] = matched["source_country"].to_numpy()
    return out


@dataclass
class Figures:
    """Additive figures of a group of lines."""

    orders: int
    units: int
    sales: int
    returns: int
    adjustments: int

    @property
    def revenue(self) -> int:
        return self.sales + self.returns + self.adjustments


def figures(lines: pd.DataFrame) -> Figures:
    sale = lines["kind"] == "sale"
    return Figures(
        int(lines.loc[sale, "invoice"].nunique()),
        int(lines.loc[sale, "quantity"].sum()),
        int(lines.loc[sale, "milli"].sum()),
        int(lines.loc[lines["kind"] == "return", "milli"].sum()),
        int(lines.loc[lines["kind"] == "adjustment", "milli"].sum()),
    )


def period_label(when: pd.Series, by: str) -> pd.Series:
    if by == "day":
        return when.dt.strftime("%Y-%m-%d")
    if by == "week":
        iso = when.dt.isocalendar()
        return iso["year"].astype(str) + "-W" + iso["week"].astype(int).map("{:02d}".format)
    if by == "month":
        return when.dt.strftime("%Y-%m")
    return when.dt.year.astype(str) + "-Q" + when.dt.quarter.astype(str)


def sales(lines: pd.DataFrame, by: str) -> dict[str, tuple[Figures, int]]:
    """Per period: the figures and the number of identified customers with any line."""
    labels = period_label(lines["when"], by)
    out = {}
    for label, group in lines.groupby(labels):
        out[label] = (figures(group), int(group.loc[group["customer"] != "", "customer"].nunique()))
    return out


def products(lines: pd.DataFrame) -> pd.DataFrame:
    """Per stock code: units sold (not returns), units returned, returned value and revenue."""
    ret = lines["kind"] == "return"
    frame = pd.DataFrame(
        {"stock_code": lines["stock_code"], "merchandise": lines["merchandise"],
         "sold": np.where(ret, 0, lines["quantity"]), "returned": np.where(ret, -lines["quantity"], 0),
         "returned_milli": np.where(ret, -lines["milli"], 0), "milli": lines["milli"]}
    )  # fmt: skip
    return frame.groupby("stock_code").agg(
        merchandise=("merchandise", "first"), sold=("sold", "sum"), returned=("returned", "sum"),
        returned_milli=("returned_milli", "sum"), milli=("milli", "sum"),
    )  # fmt: skip


def top(frame: pd.DataFrame, column: str, n: int) -> list[str]:
    """The n index labels with the largest `column`, ties by label (stock code)."""
    ordered = frame.reset_index().sort_values([column, frame.index.name], ascending=[False, True], kind="stable")
    return ordered[frame.index.name].head(n).tolist()


def countries(lines: pd.DataFrame) -> dict[str, tuple[Figures, int]]:
    out = {}
    for country, group in lines.groupby("country"):
        out[country] = (figures(group), int(group.loc[group["customer"] != "", "customer"].nunique()))
    return out


def customers(lines: pd.DataFrame) -> pd.DataFrame:
    """Per identified customer: orders, units, sales, returns, revenue, first and last order, current country."""
    known = lines[lines["customer"] != ""]
    sale, ret = known["kind"] == "sale", known["kind"] == "return"
    table = (
        known.assign(
            sale_invoice=known["invoice"].where(sale), sale_units=np.where(sale, known["quantity"], 0),
            sale_milli=np.where(sale, known["milli"], 0), return_milli=np.where(ret, known["milli"], 0), sale_day=known["date"].where(sale),
        )
        .groupby("customer")
        .agg(
            orders=("sale_invoice", "nunique"), units=("sale_units", "sum"), sales=("sale_milli", "sum"), returns=("return_milli", "sum"),
            revenue=("milli", "sum"), first=("sale_day", "min"), last=("sale_day", "max"),
        )
    )  # fmt: skip
    starts = known.groupby(["customer", "source_country"], as_index=False)["when"].min().sort_values(["customer", "when"])
    table["country"] = starts.groupby("customer")["source_country"].last()  # the version opened last is the current one
    return table


def rfm(lines: pd.DataFrame) -> pd.DataFrame:
    """Per customer with orders: recency, frequency, monetary, their 1-5 scores by percentile rank
    (equal values share a score), FM and the segment of the documented grid."""
    table = customers(lines)
    table = table[table["orders"] > 0].copy()
    reference = lines.loc[lines["kind"] == "sale", "date"].max()
    table["recency"] = (reference - table["last"]).dt.days
    n = len(table)

    def score(values: pd.Series) -> pd.Series:
        return 1 + 5 * (values.rank(method="min").astype(int) - 1) // n

    table["r"] = score(-table["recency"])
    table["f"] = score(table["orders"])
    table["m"] = score(table["revenue"])
    table["fm"] = (table["f"] + table["m"] + 1) // 2
    table["segment"] = [SEGMENT_GRID[r][fm - 1] for r, fm in zip(table["r"], table["fm"], strict=True)]
    return table


def cohorts(lines: pd.DataFrame) -> dict[str, list[int]]:
    """Per cohort (month of the first order): customers with an order in month +0, +1, ... up to the last month of the data."""
    sold = lines[(lines["kind"] == "sale") & (lines["customer"] != "")]
    month = sold["when"].dt.year * 12 + sold["when"].dt.month - 1
    active = pd.DataFrame({"customer": sold["customer"], "month": month}).drop_duplicates()
    first = active.groupby("customer")["month"].min().rename("cohort")
    active = active.join(first, on="customer")
    newest = lines["when"].max()
    last = newest.year * 12 + newest.month - 1
    out = {}
    for cohort, group in active.groupby("cohort"):
        counts = group.groupby(group["month"] - cohort)["customer"].nunique()
        out[f"{cohort // 12}-{cohort % 12 + 1:02d}"] = [int(counts.get(k, 0)) for k in range(last - cohort + 1)]
    return out
