"""Cleaning: normalise text, parse numbers and dates, apply the business rules.

Every row of a chunk leaves here either accepted (typed, ready for transformation) or
rejected with one or more reason codes and its raw values. Vectorised throughout.

Two steps, one implementation of every rule: `CleaningRules.prepare` applies every rule but the
duplicate rule and needs nothing but the chunk (a Dask worker runs it on its partition);
`Cleaner.finish` applies the duplicate rule, which must see the rows in source order (one
`DuplicateTracker` per source). `Cleaner.clean` is the two in a row: the pandas path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from config.settings import Settings
from database.bulk import timestamp_text
from database.models import dim_customers, dim_products, fact_sales
from etl.identity import DuplicateTracker, line_identity
from utils.vocabulary import SNAKE, SOURCE_COLUMNS

PRICE_SCALE = 1000  # prices and totals are exact integers of thousandths
# A fact cannot exist without these, whatever rules.required_fields says.
STRUCTURAL_FIELDS = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice")
# ASCII digits only: `\d` also matches other scripts' digits (٣, ６), which the number parser refuses.
_INT = r"[+-]?[0-9]{1,15}"
_PRICE = r"[+-]?(?:[0-9]{1,12}(?:\.[0-9]{0,3})?|\.[0-9]{1,3})"
_CUSTOMER = r"[0-9]{1,15}(?:\.0*)?"
# Control characters (tab and line breaks excepted), and U+2400 which stands for a NUL in the
# quarantine (PostgreSQL text cannot hold a NUL), so a replayed row is refused again.
# Written with the characters themselves, not `\u` escapes: pandas hands a pattern with a `\u` escape
# to Python's re row by row instead of pyarrow's RE2.
_CONTROL = "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u2400]"
NUL_STAND_IN = "\u2400"
# |line total| must fit NUMERIC(18, 3): at most 15 digits before the point (in thousandths: < 1e18).
_MAX_LINE_TOTAL_MILLI = 1e18


def _max_lengths() -> dict[str, int]:
    """Source column -> length of the warehouse column its cleaned value goes to (PostgreSQL
    refuses a longer value, and the whole run with it)."""
    targets = {
        "InvoiceNo": fact_sales.c.invoice_no,
        "StockCode": dim_products.c.stock_code,
        "CustomerID": dim_customers.c.customer_id,
        "Country": dim_customers.c.country,
    }
    return {col: column.type.length for col, column in targets.items()}


MAX_LENGTHS = _max_lengths()


@dataclass
class CleanResult:
    """Accepted rows (typed) and rejected rows (raw values plus reasons) of one chunk."""

    accepted: pd.DataFrame
    rejected: pd.DataFrame


@dataclass
class Prepared:
    """One chunk after every rule but the duplicate rule (what a Dask worker sends back).

    `accepted` holds the rows no rule has rejected so far, typed, with their line hash as
    line_id; `raw` every row's source text (the quarantine keeps it); `flags` every row's reasons
    (one column per code); `hashes` every row's line hash, in source order; `invoices` a hash
    of every row's trimmed InvoiceNo (equal lines have equal invoices: the duplicate rule's
    spill is organised by them)."""

    accepted: pd.DataFrame
    raw: pd.DataFrame
    codes: list[str]
    flags: np.ndarray
    hashes: np.ndarray
    source_rows: np.ndarray
    invoices: np.ndarray
    fact_dates: np.ndarray  # every row's `fact_date_keys`

    def __len__(self) -> int:
        return len(self.hashes)

    def shift_rows(self, offset: int) -> None:
        """Add `offset` to every source row (a partition numbered from 1 placed in its file)."""
        if offset:
            self.source_rows = self.source_rows + offset
            self.accepted["source_row"] += offset


def _trimmed(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({c: frame[c].str.strip() for c in frame.columns})
    out["InvoiceNo"] = out["InvoiceNo"].str.upper()
    out["StockCode"] = out["StockCode"].str.upper()
    return out


def _control_characters(t: pd.DataFrame) -> np.ndarray:
    """Rows with a control character (or U+2400) in any field. A column whose text holds no
    such byte at all, as in most extracts, is passed over without the per-row regex."""
    found = np.zeros(len(t), dtype=bool)
    for col in SOURCE_COLUMNS:
        if _may_hold_control(t[col]):
            found |= t[col].str.contains(_CONTROL, regex=True).to_numpy(dtype=bool)
    return found


def _may_hold_control(values: pd.Series) -> bool:
    """Whether the UTF-8 bytes behind `values` contain a control byte or U+2400 (E2 90 80).
    Checks whole buffers, so a byte outside the values only costs the regex, never a miss."""
    text = pa.array(values)  # no copy for Arrow-backed text
    for chunk in text.chunks if isinstance(text, pa.ChunkedArray) else [text]:
        data = chunk.buffers()[2]
        if data is None:
            continue
        raw = np.frombuffer(data, dtype=np.uint8)
        control = ((raw < 0x20) & (raw != 0x09) & (raw != 0x0A) & (raw != 0x0D)) | (raw == 0x7F)
        if control.any():
            return True
        lead = np.flatnonzero(raw[:-2] == 0xE2)
        if len(lead) and ((raw[lead + 1] == 0x90) & (raw[lead + 2] == 0x80)).any():
            return True
    return False


def _parse_dates(values: pd.Series, formats: list[str]) -> pd.Series:
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us]")
    todo = values != ""
    for fmt in formats:
        if not todo.any():
            break
        attempt = pd.to_datetime(values[todo], format=fmt, errors="coerce").astype("datetime64[us]")
        parsed.loc[attempt.index] = attempt
        todo &= parsed.isna()
    return parsed


def _cast_valid(values: pd.Series, ok: pd.Series, to: pa.DataType) -> np.ndarray:
    """Cast already-validated text to numbers with pyarrow (invalid entries become 0)."""
    arr = pa.array(values, type=pa.large_string())
    safe = pc.if_else(pa.array(ok.to_numpy(dtype=bool)), arr, pa.scalar("0", pa.large_string()))
    safe = pc.replace_substring_regex(safe, pattern=r"^\+", replacement="")  # pyarrow's int parser refuses "+5"
    return pc.cast(safe, to).to_numpy(zero_copy_only=False)


def _parse_price_milli(values: pd.Series, ok: pd.Series) -> np.ndarray:
    as_float = _cast_valid(values, ok, pa.float64())
    return np.rint(as_float * PRICE_SCALE).astype(np.int64)


class CleaningRules:
    """Every rule but the duplicate rule; holds no state between chunks, so any process can run it."""

    def __init__(self, settings: Settings, now: datetime | None = None) -> None:
        self.rules = settings.rules
        self.formats = settings.etl.date_formats
        self.decimal = settings.etl.decimal
        self.products = settings.products
        now = now or datetime.now()
        self.max_date = pd.Timestamp(now + timedelta(days=self.rules.max_future_days))
        self.min_date = pd.Timestamp(self.rules.min_date)

    def prepare(self, frame: pd.DataFrame, source_rows: np.ndarray) -> Prepared:
        """Trim, parse and apply the stateless rules to one chunk of raw text rows."""
        raw = frame.reset_index(drop=True)
        t = _trimmed(raw)
        if self.decimal == ",":
            t["UnitPrice"] = t["UnitPrice"].str.replace(",", ".", regex=False)
        reasons: dict[str, object] = {}  # reason code -> boolean Series or array (one frame at the end)
        for col in dict.fromkeys([*STRUCTURAL_FIELDS, *self.rules.required_fields]):
            reasons[f"missing_{SNAKE[col]}"] = t[col] == ""

        q_ok = t["Quantity"].str.fullmatch(_INT)
        p_ok = t["UnitPrice"].str.fullmatch(_PRICE)
        c_ok = t["CustomerID"].str.fullmatch(_CUSTOMER) | (t["CustomerID"] == "")
        quantity = _cast_valid(t["Quantity"], q_ok, pa.int64())
        price = _parse_price_milli(t["UnitPrice"], p_ok)
        when = _parse_dates(t["InvoiceDate"], self.formats)
        customer = t["CustomerID"].str.replace(r"\.0*$", "", regex=True).where(c_ok & (t["CustomerID"] != ""), None)

        reasons["bad_quantity"] = ~q_ok & (t["Quantity"] != "")
        reasons["bad_unit_price"] = ~p_ok & (t["UnitPrice"] != "")
        reasons["bad_invoice_date"] = when.isna() & (t["InvoiceDate"] != "")
        reasons["bad_customer_id"] = ~c_ok
        if self.rules.reject_zero_quantity:
            reasons["zero_quantity"] = q_ok & (quantity == 0)
        if self.rules.reject_non_positive_price:
            exempt = t["StockCode"].isin(self.rules.price_exempt_stock_codes)
            for prefix in self.rules.price_exempt_invoice_prefixes:
                exempt |= t["InvoiceNo"].str.startswith(prefix)
            reasons["non_positive_price"] = p_ok & (price <= 0) & ~exempt
        reasons["out_of_range"] = (
            (q_ok & (np.abs(quantity) > self.rules.max_abs_quantity))
            | (p_ok & (np.abs(price) > self.rules.max_unit_price * PRICE_SCALE))
            | (when.notna() & ((when < self.min_date) | (when > self.max_date)))
            | (q_ok & p_ok & (np.abs(quantity.astype(np.float64) * price) >= _MAX_LINE_TOTAL_MILLI))
        )
        reasons["too_long"] = np.logical_or.reduce([(t[col].str.len() > n).to_numpy() for col, n in MAX_LENGTHS.items()])
        reasons["control_characters"] = _control_characters(t)

        hashes = line_identity(_canonical(t, q_ok, quantity, p_ok, price, when, customer))
        flags = np.column_stack([np.asarray(v, dtype=bool) for v in reasons.values()])
        ok = ~flags.any(axis=1)
        accepted = self._accepted(t[ok], quantity[ok], price[ok], when[ok], customer[ok], hashes[ok].view(np.int64), source_rows[ok])
        invoices = pd.util.hash_pandas_object(t["InvoiceNo"], index=False).to_numpy(dtype=np.uint64)
        fact_dates = fact_date_keys(t["InvoiceDate"], when)
        return Prepared(accepted, raw, list(reasons), flags, hashes, np.asarray(source_rows), invoices, fact_dates)

    def _accepted(self, t, quantity, price, when, customer, line_id, rows) -> pd.DataFrame:
        invoice = t["InvoiceNo"]
        adjustment = t["StockCode"].isin(self.rules.price_exempt_stock_codes)
        for prefix in self.rules.price_exempt_invoice_prefixes:
            adjustment |= invoice.str.startswith(prefix)
        ttype = np.where(adjustment, "adjustment", np.where((quantity < 0) | invoice.str.startswith("C"), "return", "sale"))
        return pd.DataFrame(
            {
                "line_id": line_id,
                "source_row": rows,
                "invoice_no": invoice.array,
                "stock_code": t["StockCode"].array,
                "description": t["Description"].array,
                "quantity": quantity,
                "unit_price_milli": price,
                "line_total_milli": quantity * price,
                "transaction_datetime": when.to_numpy(),
                "date_key": (when.dt.year * 10000 + when.dt.month * 100 + when.dt.day).to_numpy(dtype=np.int64),
                "customer_id": customer.array,
                "country": t["Country"].array,
                "transaction_type": ttype,
                "product_category": product_category(
                    t["StockCode"], self.products.non_merchandise_codes, self.products.non_merchandise_prefixes
                ),
            }
        )


class Cleaner:
    """Applies the configured rules to chunk after chunk (duplicates tracked across chunks)."""

    def __init__(self, settings: Settings, now: datetime | None = None) -> None:
        self.stateless = CleaningRules(settings, now)
        self.reject_duplicates = settings.rules.reject_duplicates
        self.duplicates = DuplicateTracker()

    def close(self) -> None:
        """Delete the duplicate rule's spill file, if it made one."""
        self.duplicates.close()

    def clean(self, frame: pd.DataFrame, source_rows: np.ndarray) -> CleanResult:
        """Split one chunk of raw text rows into accepted and rejected rows."""
        return self.finish(self.stateless.prepare(frame, source_rows))

    def finish(self, prepared: Prepared) -> CleanResult:
        """The duplicate rule and the line identities: call it for the chunks of one source in order."""
        occurrence = self.duplicates.occurrences(prepared.hashes, prepared.invoices)
        line_id = self.duplicates.identity(prepared.hashes, occurrence)
        codes, flags = prepared.codes, prepared.flags
        ok = ~flags.any(axis=1)
        accepted = prepared.accepted
        if self.reject_duplicates:
            codes, flags = [*codes, "duplicate"], np.column_stack([flags, occurrence > 1])
            keep = occurrence[ok] == 1
            if not keep.all():
                accepted = accepted[keep].reset_index(drop=True)
        else:
            accepted["line_id"] = line_id[ok]  # a repeat keeps its own identity
        bad = flags.any(axis=1)
        rejected = _rejected(prepared.raw[bad], np.array(codes), flags[bad], line_id[bad], prepared.source_rows[bad])
        rejected["date_key"] = prepared.fact_dates[bad]
        return CleanResult(accepted, rejected)


def product_category(codes: pd.Series, by_code: dict[str, str], by_prefix: dict[str, str]) -> np.ndarray:
    """Category of each (upper-cased) stock code: 'merchandise' unless configured otherwise.
    Worked out once per distinct code (a few thousand in a whole file), then spread to the rows."""
    positions, distinct = pd.factorize(codes, use_na_sentinel=False)
    unique = pd.Series(distinct, dtype="str")
    category = unique.map({k.upper(): v for k, v in by_code.items()})
    for prefix, name in by_prefix.items():
        category = category.where(~(unique.str.startswith(prefix.upper()) & category.isna()), name)
    return category.fillna("merchandise").to_numpy(dtype=object)[positions]


def _canonical(t: pd.DataFrame, q_ok, quantity, p_ok, price, when, customer) -> pd.DataFrame:
    """The eight fields in one canonical text form each, so equal sales compare equal."""
    out = t.copy()
    out["Quantity"] = t["Quantity"].where(~q_ok, pd.Series(quantity, index=t.index).astype("str"))
    out["UnitPrice"] = t["UnitPrice"].where(~p_ok, pd.Series(price, index=t.index).astype("str"))
    out["InvoiceDate"] = t["InvoiceDate"].where(when.isna(), _iso_text(when))
    out["CustomerID"] = customer.fillna(t["CustomerID"])
    return out[list(SOURCE_COLUMNS)]


def fact_date_keys(text: pd.Series, when: pd.Series) -> np.ndarray:
    """Per row, the only date (YYYYMMDD, -1 for none) a fact with the row's line identity can be
    on, so a rejected line is looked up among the facts through the (date_key, line_id) index.
    A fact's identity hashes its time as ISO text (`_iso_text`): a row with a parsed time has
    its date; a row whose time did not parse hashes its trimmed text, which equals a fact's only
    if it is that ISO text; any other row matches no fact."""
    keys = _date_keys(when)
    missing = np.flatnonzero(keys < 0)
    if len(missing):
        iso = pd.to_datetime(text.iloc[missing], format="%Y-%m-%d %H:%M:%S", errors="coerce")
        keys[missing] = _date_keys(iso)
    return keys


def _date_keys(when: pd.Series) -> np.ndarray:
    days = when.dt.year * 10000 + when.dt.month * 100 + when.dt.day
    return days.fillna(-1).to_numpy(dtype=np.int64)


def _iso_text(when: pd.Series) -> pd.Series:
    """`when` as strftime('%Y-%m-%d %H:%M:%S') writes it (line identities hash this text)."""
    return pd.Series(timestamp_text(pa.array(when.to_numpy(), from_pandas=True)), index=when.index, dtype="str")


def _rejected(raw: pd.DataFrame, codes: np.ndarray, flags: np.ndarray, line_id: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
    joined = [";".join(codes[f]) for f in flags]
    out = pd.DataFrame({"line_id": line_id, "source_row": rows, "reasons": joined})
    for col in SOURCE_COLUMNS:
        out[SNAKE[col]] = _storable(raw[col]).to_numpy()
    out["raw_line"] = None
    return out


def _storable(values: pd.Series) -> pd.Series:
    """Raw text as the warehouse can keep it: a NUL becomes U+2400 (PostgreSQL text holds no NUL)."""
    return values.str.replace("\x00", NUL_STAND_IN, regex=False)


def malformed_rows(malformed: list[tuple[int, str, str]]) -> pd.DataFrame:
    """Quarantine records for lines the CSV parser could not split into eight fields."""
    rows = np.array([r for r, _, _ in malformed], dtype=np.int64)
    text = pd.Series([t for _, t, _ in malformed], dtype="str")
    ids = line_identity(pd.DataFrame({"raw": text, "row": rows.astype(str)})).view(np.int64)
    text = _storable(text)
    out = pd.DataFrame({"line_id": ids, "source_row": rows, "reasons": "malformed_line"})
    for col in SOURCE_COLUMNS:
        out[SNAKE[col]] = ""
    out["raw_line"] = text.to_numpy()
    return out
