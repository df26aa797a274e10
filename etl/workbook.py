"""Excel workbooks (.xlsx, .xlsm): every sheet (or one, with --sheet), streamed in chunks.

openpyxl's read-only mode parses the sheet XML as a stream, so memory stays bounded by the chunk
size, not by the workbook. Each sheet has its own header row (the first non-blank row), mapped
with `resolve_columns` like a CSV header, so the first edition (`InvoiceNo`, `UnitPrice`,
`CustomerID`) and the second ("Online Retail II": `Invoice`, `Price`, `Customer ID`, one sheet
per year) load the same way.

Source rows are numbered continuously across the sheets read, in workbook order: 1 is the
first data row of the first sheet, and the first data row of the next sheet follows the last
row of the previous one. Blank rows are skipped and not numbered.

Cell values become the canonical text every reader produces (`text_value`); the database and
HTTP readers use the same conversion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import weakref
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd

from config.settings import Settings
from etl.ingestion import Chunk
from etl.mapping import resolve_columns
from etl.sources import LocalSource
from utils.errors import SourceError
from utils.vocabulary import SOURCE_COLUMNS

log = logging.getLogger(__name__)

DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_PLAIN_INT_LIMIT = 1e15  # integral floats below this are written without ".0"


# --- values to canonical text (shared by every non-CSV reader) -----------------------------------------------


def text_value(value: object) -> str:
    """One source value as text: '' for missing, numbers that parse back to the same value,
    datetimes as `YYYY-MM-DD HH:MM:SS` (rounded to the second), dates at midnight."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, datetime):
        return _round_second(value).strftime(DATETIME_FORMAT)
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d 00:00:00")
    if isinstance(value, time | timedelta):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return ""
    if math.isinf(value):
        return str(value)
    if value.is_integer() and abs(value) < _PLAIN_INT_LIMIT:
        return str(int(value))
    text = repr(value)  # the shortest text that reads back as the same float: 2.55, not 2.5499999999999998
    return format(Decimal(text), "f") if "e" in text else text


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        return "" if value.is_nan() else str(value)
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _round_second(value: datetime) -> datetime:
    """Excel stores times as fractions of a day: 08:26 may come back as 08:25:59.999."""
    if value.microsecond == 0:
        return value
    return (value + timedelta(microseconds=500_000)).replace(microsecond=0)


def text_column(values: Sequence[object]) -> pd.Series:
    """A list of source values as a pandas text column (strings pass through untouched)."""
    return pd.Series([v if type(v) is str else text_value(v) for v in values], dtype="str")


def text_frame(rows: Sequence[Sequence[object]], positions: dict[str, int]) -> pd.DataFrame:
    """Rows of values (tuples) to the eight canonical text columns; `positions` maps each
    canonical column to its index in a row (rows are at least as long as every index)."""
    return pd.DataFrame({c: text_column([r[positions[c]] for r in rows]) for c in SOURCE_COLUMNS})


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="str") for c in SOURCE_COLUMNS})


def canonical_positions(headers: list[str], mapping: dict[str, str]) -> dict[str, int]:
    """canonical column -> index of its header (the first one, when a header repeats)."""
    positions: dict[str, int] = {}
    for index, header in enumerate(headers):
        target = mapping.get(header)
        if target is not None and target not in positions:
            positions[target] = index
    return positions


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_file(path: Path, kind: str) -> None:
    """SourceError for a missing path, a directory or an empty file."""
    if not path.exists():
        raise SourceError(f"{path}: file not found; check the --source path")
    if path.is_dir():
        raise SourceError(f"{path}: is a directory; pass a {kind} file (or a folder of extracts to load each one)")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty; expected a {kind} with a header row and sales rows")


# --- the workbook reader -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SheetPlan:
    """One sheet to read: where its header is and which column holds each canonical field."""

    title: str
    header_row: int  # 1-based sheet row of the header
    width: int  # number of header cells
    positions: dict[str, int]


def _is_blank(values: tuple) -> bool:
    return values.count(None) == len(values) or all(v is None or (type(v) is str and not v.strip()) for v in values)


def _header_text(values: tuple) -> list[str]:
    headers = [text_value(v).strip() for v in values]
    while headers and not headers[-1]:
        headers.pop()
    return headers


class WorkbookSource(LocalSource):
    """An Excel workbook read sheet by sheet with openpyxl's streaming (read-only) mode."""

    def __init__(self, path: Path, settings: Settings, options) -> None:
        self.path = Path(path)
        check_file(self.path, "Excel workbook (.xlsx)")
        self.location = str(self.path.resolve())
        # The same-file skip is for the whole workbook: one sheet of it is not "the same source".
        self.checksum = sha256_file(self.path) if options.sheet is None else None
        self.encoding = None
        wb = self._open()
        try:
            self.sheets = self._plan(wb, options.sheet, options.column_map)
            self.estimated_rows = self._estimate(wb)
        except BaseException:
            wb.close()
            raise
        # Kept open for chunks(): opening parses every sheet once more when the file has no
        # <dimension> element (files written by openpyxl's write-only mode, for one).
        self._wb = wb
        self._closer = weakref.finalize(self, wb.close)

    def _open(self):
        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            return load_workbook(self.path, read_only=True, data_only=True, keep_links=False)
        except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as exc:
            raise SourceError(
                f"{self.path}: cannot be opened as an Excel workbook ({type(exc).__name__}: {exc}); "
                "save it as .xlsx (old .xls files are not supported) or export the sales as CSV"
            ) from None

    def _plan(self, wb, sheet: str | None, column_map: dict[str, str]) -> list[SheetPlan]:
        titles = self._chosen(wb, sheet)
        plans, header_only = [], []
        for title in titles:
            plan, has_rows = self._plan_sheet(wb[title], title, column_map, explicit=sheet is not None)
            if plan is None:
                continue
            if has_rows:
                plans.append(plan)
            else:
                header_only.append(title)
        if not plans:
            where = f"sheet {titles[0]!r}" if sheet is not None else "every sheet"
            if header_only:
                raise SourceError(f"{self.path}: has a header line but no data rows ({where})")
            raise SourceError(f"{self.path}: {where} is empty; expected a header row and sales rows")
        for title in header_only:
            log.info("%s: sheet %r has a header but no data rows; skipped", self.path, title)
        return plans

    def _chosen(self, wb, sheet: str | None) -> list[str]:
        names = list(wb.sheetnames)
        if not names:
            raise SourceError(f"{self.path}: the workbook has no sheets")
        if sheet is None:
            return names
        if sheet in names:
            return [sheet]
        folded = [n for n in names if n.strip().casefold() == sheet.strip().casefold()]
        if len(folded) == 1:
            return folded
        listed = ", ".join(repr(n) for n in names)
        raise SourceError(
            f"{self.path}: no sheet named {sheet!r}; the workbook has {listed}. Pass one of them with --sheet, or leave --sheet out to read every sheet"
        )

    def _plan_sheet(self, ws, title: str, column_map: dict[str, str], explicit: bool) -> tuple[SheetPlan | None, bool]:
        """The sheet's header and whether a data row follows it; (None, False) for an empty sheet."""
        rows = ws.iter_rows(values_only=True)
        header_row, headers = 0, None
        for number, values in enumerate(rows, start=1):
            if not _is_blank(values):
                header_row, headers = number, _header_text(values)
                break
        if headers is None:
            if explicit:
                raise SourceError(f"{self.path}: sheet {title!r} is empty; expected a header row and sales rows")
            log.info("%s: sheet %r is empty; skipped", self.path, title)
            return None, False
        where = f"{self.path} sheet {title!r}"
        try:
            mapping = resolve_columns(headers, column_map, where)
        except SourceError as exc:
            hint = "" if explicit else " (to read only the sales sheet, pass --sheet NAME)"
            raise SourceError(f"{exc}{hint}") from None
        has_rows = any(not _is_blank(values) for values in rows)
        return SheetPlan(title, header_row, len(headers), canonical_positions(headers, mapping)), has_rows

    def _estimate(self, wb) -> int | None:
        total = 0
        for plan in self.sheets:
            max_row = wb[plan.title].max_row
            if not max_row:
                return None
            total += max(0, max_row - plan.header_row)
        return total or None

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        wb, self._wb = self._wb or self._open(), None
        try:
            yield from _Chunker(chunk_size).run(wb, self.sheets)
        finally:
            wb.close()


class _Chunker:
    """Collects the rows of the planned sheets into chunks of `chunk_size` records, numbering
    them continuously; a chunk may span two sheets (each keeps its own column positions)."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.next_row = 1
        self.segments: list[tuple[list[tuple], dict[str, int]]] = []
        self.numbers: list[int] = []
        self.bad: list[tuple[int, str, str]] = []

    def run(self, wb, sheets: list[SheetPlan]) -> Iterator[Chunk]:
        for plan in sheets:
            yield from self._sheet(wb[plan.title], plan)
        if self.numbers or self.bad:
            yield self._cut()

    def _sheet(self, ws, plan: SheetPlan) -> Iterator[Chunk]:
        width, pad = plan.width, (None,) * plan.width
        rows: list[tuple] = []
        self.segments.append((rows, plan.positions))
        sheet_row = plan.header_row
        for values in ws.iter_rows(min_row=plan.header_row + 1, values_only=True):
            sheet_row += 1
            if _is_blank(values):
                continue
            number = self.next_row
            self.next_row += 1
            if len(values) > width and any(v is not None for v in values[width:]):
                self.bad.append((number, ",".join(text_value(v) for v in values), _overflow_detail(plan, sheet_row, values)))
            else:
                rows.append(values + pad[: width - len(values)] if len(values) < width else values)
                self.numbers.append(number)
            if len(self.numbers) + len(self.bad) >= self.chunk_size:
                yield self._cut()
                rows = []
                self.segments.append((rows, plan.positions))

    def _cut(self) -> Chunk:
        frames = [text_frame(rows, positions) for rows, positions in self.segments if rows]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True) if frames else empty_frame()
        chunk = Chunk(frame, np.asarray(self.numbers, dtype=np.int64), self.bad)
        self.segments, self.numbers, self.bad = [], [], []
        return chunk


def _overflow_detail(plan: SheetPlan, sheet_row: int, values: tuple) -> str:
    from openpyxl.utils import get_column_letter

    extra = [get_column_letter(i + 1) for i in range(plan.width, len(values)) if values[i] is not None]
    return f"sheet {plan.title!r} row {sheet_row}: value(s) in column(s) {', '.join(extra)}, which have no header"
