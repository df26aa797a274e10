"""Column mapping: source headers -> the eight canonical columns.

Known variants of the same data are recognised without configuration (case, spaces and
underscores ignored): `Invoice`/`InvoiceNo`, `Price`/`UnitPrice`, `Customer ID`/`CustomerID`
(the layout of "Online Retail II"). Anything else is mapped explicitly: a named source in the
config (`sources.NAME.columns`) or `--map Target=Source` on the command line.
"""

from __future__ import annotations

from utils.errors import SourceError
from utils.vocabulary import SOURCE_COLUMNS

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
    """raw header -> canonical column; SourceError naming the missing or ambiguous columns and the headers found."""
    explicit = explicit or {}
    found = _shown(headers)
    by_key: dict[str, list[str]] = {}
    for h in headers:
        by_key.setdefault(header_key(h), []).append(h)
    mapping: dict[str, str] = {}
    for target, source in explicit.items():
        raws = by_key.get(header_key(source), [])
        if not raws:
            raise SourceError(f"{where}: mapped column {source!r} (for {target}) not found; found: {found}")
        _one(raws, target, where, found)
        mapping[raws[0]] = target
    for canonical in SOURCE_COLUMNS:
        if canonical in mapping.values():
            continue
        raws = [raw for key, group in by_key.items() if VARIANTS.get(key) == canonical for raw in group if raw not in mapping]
        if raws:
            _one(raws, canonical, where, found)
            mapping[raws[0]] = canonical
    missing = [c for c in SOURCE_COLUMNS if c not in mapping.values()]
    if missing:
        raise SourceError(  # one line whatever the header holds
            f"{where}: required column(s) {', '.join(missing)} not found in the header line; found: {found}. "
            f"Expected: {', '.join(SOURCE_COLUMNS)} (map others with --map Target=Source)"
        )
    return mapping


def _shown(headers: list[str], limit: int = 400) -> str:
    """The headers found, for an error message: each name and the whole list shortened."""
    text = ", ".join(h.strip()[:60] + ("…" if len(h.strip()) > 60 else "") for h in headers) or "(nothing)"
    return text if len(text) <= limit else text[:limit] + f"… ({len(headers)} columns)"


def _one(raws: list[str], target: str, where: str, found: str) -> None:
    """Refuse a header that gives one canonical column twice: which one holds the data is a guess."""
    if len(raws) > 1:
        names = " and ".join(repr(r.strip()) for r in raws)
        raise SourceError(
            f"{where}: the header has {len(raws)} columns for {target} ({names}); found: {found}. "
            f"Rename or remove all but one, or pick one with --map {target}=NAME"
        )
