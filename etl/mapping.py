"""Column mapping: source headers -> the eight canonical columns.

Known variants of the same data are recognised without configuration (case, spaces and
underscores ignored): `Invoice`/`InvoiceNo`, `Price`/`UnitPrice`, `Customer ID`/`CustomerID`
(the layout of "Online Retail II"). Anything else is mapped explicitly: a named source in the
config (`sources.NAME.columns`) or `--map Target=Source` on the command line.
"""

from __future__ import annotations

from etl.columns import SOURCE_COLUMNS
from utils.errors import SourceError

VARIANTS: dict[str, str] = {
    "invoiceno": "InvoiceNo",
    "invoice": "InvoiceNo",
    "invoicenumber": "InvoiceNo",
    "stockcode": "StockCode",
    "description": "Description",
    "quantity": "Quantity",
    "invoicedate": "InvoiceDate",
    "unitprice": "UnitPrice",
    "price": "UnitPrice",
    "customerid": "CustomerID",
    "country": "Country",
}


def header_key(name: str) -> str:
    """A header compared without case, spaces, underscores and a byte-order mark."""
    return name.strip().lstrip("\ufeff").lower().replace(" ", "").replace("_", "")


def parse_map_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`Target=Source` strings to a dict; the target must be a canonical column."""
    out: dict[str, str] = {}
    for pair in pairs:
        target, sep, source = pair.partition("=")
        target, source = target.strip(), source.strip()
        if not sep or not target or not source:
            raise SourceError(f"--map {pair!r}: expected Target=Source, e.g. --map UnitPrice=Preis")
        canonical = {c.lower(): c for c in SOURCE_COLUMNS}.get(target.lower())
        if canonical is None:
            raise SourceError(f"--map {pair!r}: unknown target column {target!r}; choose from {', '.join(SOURCE_COLUMNS)}")
        out[canonical] = source
    return out


def resolve_columns(headers: list[str], explicit: dict[str, str] | None, where: str) -> dict[str, str]:
    """raw header -> canonical column; SourceError naming the missing columns and the headers found."""
    explicit = explicit or {}
    by_key = {header_key(h): h for h in headers}
    mapping: dict[str, str] = {}
    for target, source in explicit.items():
        raw = by_key.get(header_key(source))
        if raw is None:
            raise SourceError(
                f"{where}: mapped column {source!r} (for {target}) not found; found: {', '.join(h.strip() for h in headers) or '(nothing)'}"
            )
        mapping[raw] = target
    for raw in headers:
        canonical = VARIANTS.get(header_key(raw))
        if canonical and canonical not in mapping.values() and raw not in mapping:
            mapping[raw] = canonical
    missing = [c for c in SOURCE_COLUMNS if c not in mapping.values()]
    if missing:
        found = ", ".join(h.strip() for h in headers) or "(nothing)"
        raise SourceError(
            f"{where}: required column(s) {', '.join(missing)} not found in the header line; found: {found}. "
            f"Expected: {', '.join(SOURCE_COLUMNS)} (map others with --map Target=Source)"
        )
    return mapping
