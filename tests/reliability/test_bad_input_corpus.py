"""A generated corpus of malformed extracts: every case ends cleanly and every line is accounted for.

Hypothesis writes CSV files with broken quoting, stray delimiters, NUL bytes, huge fields, mixed
and invalid encodings, byte-order marks, odd line endings, truncation, values out of range and
bad headers, and runs `etl` on each in-process (click's CliRunner) against one SQLite warehouse
per family. Each case must end with exit code 0 — or exit code 1 and one `Error:` line naming
the file, for a whole-file problem (no usable header, no data rows, binary) — and never with a
traceback. Rows read = loaded + quarantined + already loaded, in the summary and in the ledger,
and the rows read are exactly the records of the file.

The expected records come from an oracle independent of the reader: the bytes are decoded by
the documented rule (UTF-8; else UTF-8 where it is UTF-8 and Windows-1252 elsewhere when both
occur; else Windows-1252; else Latin-1; UTF-16/32 by their byte-order mark), split into lines
at LF, CRLF and CR, and cut into records with Python's csv module: a line is one record unless
it ends inside a quoted field and the next lines (at most 100) close it as one strictly quoted
record of the header's width. Every quarantined row must carry the raw values (or, for a
malformed line, the raw text) and the source row number of the record the oracle expects
there; every loaded fact must come from a record that has the header's width.

Examples per run: RDP_CORPUS_EXAMPLES (total over the families, default 520). Seeded and
derandomized, so CI runs the same cases every time.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.conftest import Cli
from tests.reliability.helpers import record
from utils.vocabulary import SNAKE, SOURCE_COLUMNS

WIDTH = len(SOURCE_COLUMNS)
MAX_SPAN = 100  # lines one quoted value may span (docs/etl.md)
TOTAL_EXAMPLES = int(os.environ.get("RDP_CORPUS_EXAMPLES", "520"))
SHARES = {"structure": 0.35, "bytes": 0.27, "values": 0.2, "headers": 0.18}
FIGURES: dict[str, Counter] = {}
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "rdp-hypothesis")  # its caches stay out of the working tree


def _examples(family: str) -> int:
    return max(10, round(TOTAL_EXAMPLES * SHARES[family]))


def _arrow_upper(text: str) -> str:
    return pc.utf8_upper(pa.array([text])).to_pylist()[0]


def _settings(family: str) -> settings:
    return settings(
        max_examples=_examples(family),
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no explain phase: it writes patch files into the tree
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------------------------
# the oracle: what the file holds, by the documented rules, computed without the platform


def _fallback(err: UnicodeError) -> tuple[str, int]:
    bad = err.object[err.start : err.end]  # type: ignore[attr-defined]
    out = []
    for b in bad:
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(b))
    return "".join(out), err.end  # type: ignore[attr-defined]


codecs.register_error("corpus-oracle-cp1252", _fallback)


@contextlib.contextmanager
def _big_fields() -> Iterator[None]:
    """csv's field limit raised for the oracle only (it is process-wide: the platform, running
    in this process, must keep its own)."""
    old = csv.field_size_limit(1 << 30)
    try:
        yield
    finally:
        csv.field_size_limit(old)


_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")]


def expected_text(data: bytes) -> str:
    """The file's text by the documented detection rule."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return data.decode(name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if any(_valid_utf8(m.group()) for m in _MULTIBYTE.finditer(data)):
        return data.decode("utf-8", errors="corpus-oracle-cp1252")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _valid_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return any(_prefix_ok(piece[:n]) for n in (2, 3, 4))


def _prefix_ok(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return len(piece) > 1
    except UnicodeDecodeError:
        return False


def _lines(text_: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    for m in re.finditer(r"\r\n|\r|\n", text_):
        out.append((text_[pos : m.start()], m.group()))
        pos = m.end()
    if pos < len(text_):
        out.append((text_[pos:], ""))
    return out


def _ends_open(line: str) -> bool:
    """Whether a line ends inside a quoted field (csv then continues it on the next line)."""
    return len(list(csv.reader([line + "\n", "\x1dEND\x1d\n"]))) == 1


def _strict_record(group: str, width: int) -> list[str] | None:
    try:
        rows = list(csv.reader([group], strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 and len(rows[0]) == width else None


@dataclass
class Rec:
    fields: list[str] | None  # None: must be a malformed record
    raw: str


def header_of(data: bytes) -> list[str]:
    first = _lines(expected_text(data).removeprefix("\ufeff"))[:1]
    return next(csv.reader([first[0][0]])) if first and first[0][0] else []


def header_key(name: str) -> str:
    return name.strip().lower().replace(" ", "").replace("_", "")


def positions(header: list[str]) -> list[int]:
    """Where each canonical column is in the header (the first matching name or variant)."""
    keys = [header_key(h) for h in header]
    return [next(i for i, k in enumerate(keys) if k in _names(c)) for c in SOURCE_COLUMNS]


def _names(column: str) -> set[str]:
    return {header_key(column), header_key(VARIANTS.get(column, column))}


def expected_records(data: bytes) -> list[Rec]:
    """The records after the header line, by the rules in the module docstring."""
    lines = _lines(expected_text(data).removeprefix("\ufeff"))[1:]
    width = len(header_of(data))
    out: list[Rec] = []
    i = 0
    while i < len(lines):
        content = lines[i][0]
        if not content:
            i += 1
            continue
        if _ends_open(content):
            joined = _join(lines, i, width)
            if joined is not None:
                out.append(joined[0])
                i = joined[1]
                continue
            out.append(Rec(None, content))
            i += 1
            continue
        fields = next(csv.reader([content]))
        out.append(Rec(fields if len(fields) == width else None, content))
        i += 1
    return out


def _join(lines: list[tuple[str, str]], i: int, width: int) -> tuple[Rec, int] | None:
    group = lines[i][0]
    for k in range(i + 1, min(i + MAX_SPAN, len(lines))):
        group += lines[k - 1][1] + lines[k][0]
        if not _ends_open(group):
            fields = _strict_record(group, width)
            return (Rec(fields, group), k + 1) if fields is not None else None
    return None


def binary_share(data: bytes) -> float:
    """Share of control bytes in the first 8 KiB (the documented binary-file test)."""
    if any(data.startswith(bom) for bom, _ in _BOMS):
        return 0.0
    sample = data[:8192]
    return sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27)) / max(1, len(sample))


def features(data: bytes, records: list[Rec]) -> set[str]:
    """What a case holds, for the figures (counted per family)."""
    text_ = expected_text(data) if data else ""
    found = {
        "NUL bytes": b"\x00" in data and not any(data.startswith(b) for b, _ in _BOMS),
        "other control bytes": any(b < 32 and b not in (0, 9, 10, 13) for b in data[:100_000]),
        "UTF-8 BOM": data.startswith(codecs.BOM_UTF8),
        "UTF-16/32 BOM": any(data.startswith(b) for b, _ in _BOMS),
        "not UTF-8": not _is_utf8(data) and not any(data.startswith(b) for b, _ in _BOMS),
        "CR line endings": bool(re.search(r"\r(?!\n)", text_)),
        "CRLF line endings": "\r\n" in text_,
        "no final line break": bool(data) and not text_.endswith(("\n", "\r")),
        "blank lines": bool(re.search(r"(\r\n|\r|\n)(\r\n|\r|\n)", text_)),
        "a field of 1 MiB or more": len(data) >= 1 << 20,
        "malformed lines": any(r.fields is None for r in records),
        "multi-line quoted values": any(r.fields is not None and ("\n" in r.raw or "\r" in r.raw) for r in records),
    }
    return {name for name, present in found.items() if present}


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def storable(value: str) -> str:
    """How the quarantine keeps a raw value: a NUL as U+2400."""
    return value.replace("\x00", "\u2400")


# ---------------------------------------------------------------------------------------------
# generators

ASCII_TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
NASTY_TEXT = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=32, max_codepoint=126),
        st.sampled_from(list('",\t\x00\x01\x1b\x7f£€éÆ\u00a0\u2028\u2400٣６😀ß')),
    ),
    max_size=14,
)
DATES = st.one_of(
    st.sampled_from(["2010-12-01 08:26:00", "2011-06-30 23:59:59", "12/1/2010 8:26", "2011-01-04 10:00"]),
    st.sampled_from(["0001-01-01 00:00:00", "9999-12-31 23:59:59", "1900-01-01 00:00:00", "2262-04-12 00:00:00", "1677-09-21 00:00:00"]),
    st.sampled_from(["2011-02-30 10:00:00", "31/12/2010 10:00", "2011-13-01 00:00:00", "", "  ", "yesterday", "2010-12-01T08:26:00Z"]),
)
NUMBERS = st.one_of(
    st.integers(-5, 5000).map(str),
    st.sampled_from(["1e308", "-1e308", "-99999999999999999999", "99999999999999999999", "NaN", "nan", "inf", "-inf", "Infinity"]),
    st.sampled_from(["0", "-0", "+5", "0.001", "2.555", "1,5", "1.2345", "٣", "６", "²", " 7 ", "0x1F", "", "1_000", "999999999999.999"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@st.composite
def sales_row(draw, values: bool = False) -> list[str]:
    """Eight realistic values; with `values`, numbers, dates and texts from the nasty pools."""
    invoice = draw(st.one_of(st.integers(500000, 599999).map(str), st.integers(500000, 599999).map(lambda n: f"C{n}")))
    row = [
        invoice,
        draw(st.sampled_from(["85123A", "71053", "POST", "M", "B", "GIFT_0001_10", "DOT", "22423"])),
        draw(ASCII_TEXT),
        draw(st.integers(-50, 500).map(str)),
        draw(st.sampled_from(["2010-12-01 08:26:00", "2011-06-30 23:59:59", "12/1/2010 8:26"])),
        draw(st.sampled_from(["2.55", "0", "-11062.06", "0.85", "4.95", "1"])),
        draw(st.one_of(st.just(""), st.integers(12346, 18287).map(str), st.integers(12346, 18287).map(lambda n: f"{n}.0"))),
        draw(st.sampled_from(["United Kingdom", "France", "EIRE", "Germany", ""])),
    ]
    if values:
        for i in draw(st.sets(st.integers(0, WIDTH - 1), max_size=4)):
            row[i] = draw(NUMBERS if i in (3, 5, 6) else DATES if i == 4 else NASTY_TEXT)
        if draw(st.integers(0, 7)) == 0:
            i, n = draw(st.sampled_from([(0, 21), (1, 51), (6, 21), (7, 101), (2, 5000)]))
            row[i] = "9" * n if i in (0, 6) else "X" * n
    return row


def quote(value: str) -> str:
    """A field as a correct CSV writer writes it (quoted when it must be; never starting with the
    delimiter inside quotes, so no correct line can close another line's stray quote)."""
    if any(c in value for c in ',"\r\n') or value != value.strip(" "):
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def broken_line(draw, row: list[str]) -> str:
    """One line damaged in a way a writer might damage it."""
    kind = draw(st.sampled_from(["stray_quote", "unclosed", "extra_delimiter", "missing_field", "junk_after_quote", "too_many", "spaces"]))
    cells = [quote(v) for v in row]
    if kind == "stray_quote":
        line = ",".join(cells)
        pos = draw(st.integers(0, len(line)))
        return line[:pos] + '"' + line[pos:]
    if kind == "unclosed":
        i = draw(st.integers(0, WIDTH - 1))
        cells[i] = '"' + row[i].replace('"', "")
        return ",".join(c.replace('"', "") if j > i else c for j, c in enumerate(cells))
    if kind == "extra_delimiter":
        line = ",".join(cells)
        pos = draw(st.integers(0, len(line)))
        return line[:pos] + "," + line[pos:]
    if kind == "missing_field":
        del cells[draw(st.integers(0, WIDTH - 1))]
        return ",".join(cells)
    if kind == "junk_after_quote":
        i = draw(st.integers(0, WIDTH - 1))
        cells[i] = f'"{row[i]}"junk'
        return ",".join(cells)
    if kind == "too_many":
        return ",".join(cells + ["x"] * draw(st.integers(1, 5)))
    return " " * draw(st.integers(1, 3))


HEADER_LINE = ",".join(SOURCE_COLUMNS)


@st.composite
def structure_case(draw) -> bytes:
    """Quoting, delimiters, line endings, blank lines, multi-line values, truncation."""
    ending = draw(st.sampled_from(["\n", "\r\n", "\r", "mixed"]))
    lines = [HEADER_LINE]
    for _ in range(draw(st.integers(1, 12))):
        row = draw(sales_row())
        kind = draw(st.sampled_from(["plain", "plain", "quoted", "multiline", "broken", "broken", "blank"]))
        if kind == "quoted":
            row[2] = draw(st.sampled_from(["MUG, RED", 'SAY "HI"', "  PADDED ", "A,B,C", 'QUOTE"']))
        elif kind == "multiline":
            row[2] = draw(st.sampled_from(["TWO\nLINES", "CR\r\nLF", "A\n\nB", 'L1\nL2, "Q"\nL3']))
        if kind == "broken":
            lines.append(draw(broken_line(row)))
        elif kind == "blank":
            lines.append("")
        else:
            lines.append(",".join(quote(v) for v in row))
    if ending == "mixed":
        body = "".join(line + draw(st.sampled_from(["\n", "\r\n", "\r"])) for line in lines)
    else:
        body = ending.join(lines) + (ending if draw(st.booleans()) else "")
    data = body.encode("utf-8")
    if draw(st.integers(0, 4)) == 0:  # truncated: cut somewhere after the header line
        start = len(lines[0]) + 2
        if start < len(data):
            data = data[: draw(st.integers(start, len(data)))]
    return data


@st.composite
def bytes_case(draw) -> bytes:
    """NUL and control bytes, huge fields, mixed and invalid encodings, byte-order marks."""
    rows = [draw(sales_row()) for _ in range(draw(st.integers(3, 10)))]
    kind = draw(st.sampled_from(["nul", "controls", "mixed", "invalid_utf8", "cp1252", "utf8_bom", "utf16", "huge", "emoji"]))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    if kind == "huge":
        rows[draw(st.integers(0, len(rows) - 1))][2] = "H" * (1 << 20)
    elif kind == "emoji":
        rows[0][2] = "😀 Ünïcödé ✓ \u2028 line-sep"
    lines = [HEADER_LINE] + [",".join(quote(v) for v in row) for row in rows]
    if kind == "cp1252":
        return ending.join([lines[0]] + [line + ";£ €ÿ" for line in lines[1:]]).encode("cp1252")
    if kind == "utf16":
        return ("\ufeff" + ending.join(lines) + ending).encode(draw(st.sampled_from(["utf-16-le", "utf-16-be"])))
    encoded = [line.encode("utf-8") for line in lines]
    for i in draw(st.sets(st.integers(1, len(encoded) - 1), max_size=3)) if len(encoded) > 1 else []:
        line = encoded[i]
        pos = draw(st.integers(0, len(line)))
        if kind == "nul":
            insert = b"\x00" * draw(st.integers(1, 3))
        elif kind == "controls":
            insert = bytes(draw(st.lists(st.sampled_from([1, 2, 7, 8, 11, 12, 27, 31, 127]), min_size=1, max_size=3)))
        elif kind == "mixed":
            insert = draw(st.sampled_from(["caf\xe9 ".encode("latin-1"), b"\xa3 5", b"\x80 ", "£".encode(), "é".encode()]))
        elif kind == "invalid_utf8":
            insert = bytes(draw(st.lists(st.integers(0x80, 0xFF), min_size=1, max_size=4)))
        else:
            insert = b""
        encoded[i] = line[:pos] + insert + line[pos:]
    data = ending.encode().join(encoded) + ending.encode()
    return (codecs.BOM_UTF8 + data) if kind == "utf8_bom" or draw(st.integers(0, 9)) == 0 else data


@st.composite
def values_case(draw) -> bytes:
    """Numbers out of range, NaN and infinities, far dates, values longer than their column."""
    rows = [draw(sales_row(values=True)) for _ in range(draw(st.integers(1, 12)))]
    return ("\n".join([HEADER_LINE] + [",".join(quote(v) for v in row) for row in rows]) + "\n").encode("utf-8")


VARIANTS = {"InvoiceNo": "Invoice", "UnitPrice": "Price", "CustomerID": "Customer ID", "StockCode": "stock_code"}


@st.composite
def headers_case(draw) -> bytes:
    """Missing, duplicated, reordered, renamed and extra header columns; empty and header-only files."""
    kind = draw(
        st.sampled_from(
            ["reordered", "extra", "variant", "missing", "duplicated", "header_only", "empty", "blank_only", "bom_only", "case"]
        )
    )
    if kind == "empty":
        return b""
    if kind == "blank_only":
        return draw(st.sampled_from([b"\n", b"\r\n\r\n", b"   \n"]))
    if kind == "bom_only":
        return codecs.BOM_UTF8
    names = list(SOURCE_COLUMNS)
    order = draw(st.permutations(range(WIDTH))) if kind in ("reordered", "extra", "variant", "case") else list(range(WIDTH))
    header = [names[i] for i in order]
    if kind == "variant":
        header = [VARIANTS.get(h, h) for h in header]
    elif kind == "case":
        header = [h.upper() if j % 2 else f" {h.lower()} " for j, h in enumerate(header)]
    elif kind == "extra":
        header.insert(draw(st.integers(0, WIDTH)), "Notes")
    elif kind == "missing":
        header.remove(draw(st.sampled_from(names)))
    elif kind == "duplicated":
        dup = draw(st.sampled_from(names))
        header.insert(draw(st.integers(0, WIDTH)), dup if draw(st.booleans()) else VARIANTS.get(dup, dup.lower()))
    rows = [] if kind == "header_only" else [draw(sales_row()) for _ in range(draw(st.integers(1, 6)))]
    lines = [",".join(header)]
    for row in rows:
        by_name = dict(zip(names, row, strict=True))
        lines.append(",".join(quote(by_name.get(_canonical(h), "note")) for h in header))
    return ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))).encode("utf-8")


def _canonical(header: str) -> str:
    return next((c for c in SOURCE_COLUMNS if header_key(header) in _names(c)), header)


# ---------------------------------------------------------------------------------------------
# running and checking one case


@dataclass
class Warehouse:
    """One SQLite (or PostgreSQL) warehouse shared by the examples of a family."""

    url: str
    folder: Path
    family: str
    count: int = 0
    figures: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        parsed = make_url(self.url)
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg2")
        self.engine = create_engine(parsed, poolclass=NullPool)
        self.cli = Cli(self.url)

    def rows(self, sql: str, **params: object) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]


def whole_file_problem(data: bytes, records: list[Rec]) -> str | None:
    """The `Error:` the documented checks give for a file (None: the file is loaded)."""
    if not data:
        return "the file is empty"
    if binary_share(data) > 0.05:
        return "looks like binary data"
    body = expected_text(data).removeprefix("\ufeff")
    if not body.strip():
        return "the file is empty"
    keys = [header_key(h) for h in header_of(data)]
    if missing := [c for c in SOURCE_COLUMNS if not any(k in _names(c) for k in keys)]:
        return f"required column(s) {', '.join(missing)} not found"
    if any(sum(k in _names(c) for k in keys) > 1 for c in SOURCE_COLUMNS):
        return "columns for"
    if not records:
        return "has a header line but no data rows"
    return None


def run_case(
    wh: Warehouse, data: bytes, options: tuple[str, ...] = (), name: str = "case", refused: str | None = None, fixed: bool = False
) -> None:
    """Load one file and check everything the module docstring promises (`refused`: the
    expected error, checked against the oracle's)."""
    wh.count += 1
    path = wh.folder / f"{name}{wh.count:04d}.csv"
    path.write_bytes(data)
    with _big_fields():
        records = expected_records(data) if data else []
        problem = whole_file_problem(data, records)
        where = positions(header_of(data)) if problem is None else []
    if fixed:  # a hand-written case: the oracle must agree with what the case expects
        assert problem == refused or (refused and problem and problem in refused), (name, problem, refused)
    runs_before = wh.rows("SELECT COUNT(*) FROM etl_runs")[0][0]
    result = wh.cli("etl", "--source", str(path), "--format", "json", *options)
    wh.figures["cases"] += 1
    wh.figures.update(f"with {feature}" for feature in features(data, records))
    wh.figures["tracebacks"] += "Traceback" in result.output
    assert "Traceback" not in result.output, result.output
    if problem is not None:
        _check_refused(wh, path, result, refused or problem, runs_before)
        return
    assert result.exit_code == 0, f"{path}: {result.output[-3000:]}"
    summary = json.loads(result.stdout)
    _check_accounting(wh, summary, records, where)
    wh.figures["loaded_runs"] += 1


def _check_refused(wh: Warehouse, path: Path, result, problem: str, runs_before: int) -> None:
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 1 and len(errors) == 1, result.output
    assert str(path) in errors[0] and problem in errors[0], (problem, errors[0])
    assert wh.rows("SELECT COUNT(*) FROM etl_runs")[0][0] == runs_before, "a refused file must not open a run"
    wh.figures["refused"] += 1
    wh.figures[f"refused: {problem}"] += 1


def _check_accounting(wh: Warehouse, summary: dict, records: list[Rec], where: list[int]) -> None:
    run_id, n = summary["run_id"], len(records)
    read, loaded, quarantined, already = (summary[k] for k in ("rows_read", "rows_loaded", "rows_quarantined", "rows_already_loaded"))
    wh.figures["records_written"] += n
    wh.figures["rows_accounted"] += loaded + quarantined + already
    assert read == loaded + quarantined + already == n, (summary, n)
    ledger = wh.rows(
        "SELECT status, rows_read, rows_loaded, rows_quarantined, rows_already_loaded FROM etl_runs WHERE run_id = :r", r=run_id
    )
    assert ledger == [(summary["status"], read, loaded, quarantined, already)]
    assert summary["status"] in ("success", "skipped")
    facts = wh.rows("SELECT source_row, invoice_no, quantity FROM fact_sales WHERE run_id = :r", r=run_id)
    cols = ", ".join(SNAKE[c] for c in SOURCE_COLUMNS)
    held = wh.rows(f"SELECT source_row, reasons, raw_line, {cols} FROM etl_quarantine WHERE run_id = :r", r=run_id)
    assert len(facts) == loaded and len(held) == quarantined
    fact_rows, held_rows = [f[0] for f in facts], [q[0] for q in held]
    assert len(set(fact_rows) | set(held_rows)) == loaded + quarantined, "a source row is counted twice"
    assert all(1 <= r <= n for r in fact_rows + held_rows)
    for row, invoice, quantity in facts:
        rec = records[row - 1]
        assert rec.fields is not None, f"row {row} {rec.raw!r} must not load"
        raw_invoice = rec.fields[where[0]].strip()
        # upper-casing: Python maps ß to SS, pyarrow's utf8_upper (pandas' arrow-backed strings) to ẞ
        assert invoice in (raw_invoice.upper(), _arrow_upper(raw_invoice)) and quantity == int(rec.fields[where[3]].strip())
    for row, reasons, raw_line, *raw in held:
        rec = records[row - 1]
        if rec.fields is None:
            assert reasons == "malformed_line" and raw_line == storable(rec.raw), (row, reasons, raw_line, rec)
        else:
            assert "malformed_line" not in reasons and raw == [storable(rec.fields[i]) for i in where], (row, reasons, raw, rec)
    wh.figures["facts"] += loaded
    wh.figures["quarantined"] += quarantined
    wh.figures["already_loaded"] += already
    wh.figures["malformed_expected"] += sum(r.fields is None for r in records)


@pytest.fixture
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    family = request.node.name.removeprefix("test_corpus_")
    wh = Warehouse(f"sqlite:///{tmp_path / 'warehouse.db'}", tmp_path, family)
    assert wh.cli("setup").exit_code == 0
    started = time.perf_counter()
    yield wh
    wh.figures["seconds"] = round(time.perf_counter() - started, 1)
    wh.engine.dispose()
    FIGURES[family] = wh.figures
    record("bad_input_corpus", family, dict(wh.figures))


@_settings("structure")
@given(data=structure_case())
def test_corpus_structure(warehouse: Warehouse, data: bytes) -> None:
    run_case(warehouse, data)


@_settings("bytes")
@given(data=bytes_case())
def test_corpus_bytes(warehouse: Warehouse, data: bytes) -> None:
    run_case(warehouse, data)


@_settings("values")
@given(data=values_case())
def test_corpus_values(warehouse: Warehouse, data: bytes) -> None:
    run_case(warehouse, data)


@_settings("headers")
@given(data=headers_case())
def test_corpus_headers(warehouse: Warehouse, data: bytes) -> None:
    run_case(warehouse, data)


# ---------------------------------------------------------------------------------------------
# the defects the corpus found, kept as fixed cases; run on SQLite and on PostgreSQL


def _rows(n: int, start: int = 0, description: str = "WHITE HANGING HEART") -> list[str]:
    return [f"{536365 + start + i},85123A,{description} {i},6,2010-12-01 08:26:00,2.55,17850,United Kingdom" for i in range(n)]


def _file(lines: list[str], ending: str = "\n") -> bytes:
    return (ending.join([HEADER_LINE, *lines]) + ending).encode("utf-8")


REGRESSIONS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    # CR-only line endings: the header check split lines at LF only and csv raised (a traceback)
    "cr_line_endings": (_file(_rows(3), "\r"), ()),
    # a 1 MiB field after many short lines: the parser block was sized from the first lines and
    # pyarrow refused the row straddling two blocks: the whole run failed
    "huge_field_mid_file": (
        _file([*_rows(2000), "9,A," + "x" * (1 << 20) + ",1,2010-12-01 08:26:00,1,1,UK", *_rows(500, 2000)]),
        ("--chunk-size", "100"),
    ),
    # one stray quote: pyarrow read every following line up to the next quote as one malformed record
    "stray_quote": (
        _file(
            [
                *_rows(2),
                '536999,A,"STRAY,6,2010-12-01 08:26:00,2.55,17850,United Kingdom',
                *_rows(5, 2),
                '1,A,"MUG, RED",1,2011-01-04 10:00,1,1,UK',
            ]
        ),
        (),
    ),
    # a file cut inside a quoted field, no trailing newline: the complete lines load
    "truncated_in_quotes": (_file(_rows(3))[:-1] + b'\n536400,A,"MUG, RE', ()),
    # NUL bytes: PostgreSQL refused the COPY of a NUL and the whole run failed
    "nul_bytes": (_file([*_rows(2), "536500,X\x00Y,desc,1,2010-12-01 08:26:00,1.00,1,UK", "536501,A,d,1,2010-12-0\x00"]), ()),
    # values longer than their warehouse column: PostgreSQL refused them and the whole run failed
    "too_long": (
        _file(
            [
                "5" * 25 + ",A,d,1,2010-12-01 08:26:00,1,1,UK",
                "1,A,d,1,2010-12-01 08:26:00,1,1," + "U" * 150,
                "2," + "S" * 60 + ",d,1,2010-12-01 08:26:00,1,1,UK",
                *_rows(1),
            ]
        ),
        (),
    ),
    # digits of other scripts matched \d, then the number parser raised ArrowInvalid (a traceback)
    "non_ascii_digits": (_file(["536600,A,d,٣,2010-12-01 08:26:00,1,1,UK", "536601,A,d,1,2010-12-01 08:26:00,６,1,UK", *_rows(1)]), ()),
    # control characters other than NUL
    "control_characters": (_file(["536700,A\x1b[31m,d,1,2010-12-01 08:26:00,1,1,UK", *_rows(2)]), ()),
    # UTF-8 with one Windows-1252 line: the whole file was read as Windows-1252, £ became Â£
    "mixed_encoding": (
        HEADER_LINE.encode()
        + "\n536800,MIX1,TEA £5,1,2010-12-01 08:26:00,1,1,UK\n".encode()
        + b"536801,MIX2,CAF\xc9,1,2010-12-01 08:26:00,1,1,UK\n",
        (),
    ),
    # UTF-16 with a byte-order mark was refused as binary data
    "utf16_bom": (("\ufeff" + HEADER_LINE + "\r\n" + "\r\n".join(_rows(3)) + "\r\n").encode("utf-16-le"), ()),
}
REFUSED: dict[str, tuple[bytes, str]] = {
    # the same column twice: the first one silently won
    "duplicated_column": (
        b"InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country,Country\n1,A,d,1,2010-12-01 08:26:00,1,1,UK,FR\n",
        "the header has 2 columns for Country",
    ),
    "variant_twice": (
        b"Invoice,InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n1,2,A,d,1,2010-12-01 08:26:00,1,1,UK\n",
        "columns for InvoiceNo ('Invoice' and 'InvoiceNo')",
    ),
    # a byte-order mark and nothing else was reported as a header without the required columns
    "bom_only": (codecs.BOM_UTF8, "the file is empty"),
    # CR endings and no rows (not a defect: kept beside cr_line_endings, which was one)
    "cr_header_only": ((HEADER_LINE + "\r\r").encode(), "has a header line but no data rows"),
}


def _descriptions(wh: Warehouse) -> None:
    assert dict(wh.rows("SELECT stock_code, description FROM dim_products WHERE stock_code LIKE 'MIX%'")) == {
        "MIX1": "TEA £5",
        "MIX2": "CAFÉ",
    }


def _nul_stand_in(wh: Warehouse) -> None:
    held = wh.rows("SELECT reasons, stock_code, raw_line FROM etl_quarantine WHERE run_id = (SELECT MAX(run_id) FROM etl_runs)")
    assert sorted(held, key=str) == sorted(
        [("control_characters", "X\u2400Y", None), ("malformed_line", "", "536501,A,d,1,2010-12-0\u2400")], key=str
    )


def _reasons(expected: dict[str, int]):
    def check(wh: Warehouse) -> None:
        got = wh.rows("SELECT reasons, COUNT(*) FROM etl_quarantine WHERE run_id = (SELECT MAX(run_id) FROM etl_runs) GROUP BY reasons")
        assert dict(got) == expected

    return check


VALUE_CHECKS = {
    "mixed_encoding": _descriptions,
    "nul_bytes": _nul_stand_in,
    "too_long": _reasons({"too_long": 3}),
    "non_ascii_digits": _reasons({"bad_quantity": 1, "bad_unit_price": 1}),
    "control_characters": _reasons({"control_characters": 1}),
    "stray_quote": _reasons({"malformed_line": 1}),
    "truncated_in_quotes": _reasons({"malformed_line": 1}),
}


def _warehouse_for(url: str, folder: Path) -> Warehouse:
    wh = Warehouse(url, folder, "regressions")
    assert wh.cli("setup").exit_code == 0
    return wh


def _run_fixed(wh: Warehouse, name: str) -> None:
    if name in REFUSED:
        data, message = REFUSED[name]
        run_case(wh, data, name=name, refused=message, fixed=True)
        return
    data, options = REGRESSIONS[name]
    run_case(wh, data, options=options, name=name, fixed=True)
    if name in VALUE_CHECKS:
        VALUE_CHECKS[name](wh)


@pytest.mark.parametrize("name", [*REGRESSIONS, *REFUSED])
def test_fixed_defect(name: str, tmp_path: Path) -> None:
    """One case per defect the corpus found (SQLite): loaded and accounted for, or refused."""
    wh = _warehouse_for(f"sqlite:///{tmp_path / 'warehouse.db'}", tmp_path)
    try:
        _run_fixed(wh, name)
    finally:
        wh.engine.dispose()


@pytest.mark.postgres
def test_nastiest_cases_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    """Every fixed case again, one after the other in one PostgreSQL warehouse (NUL bytes and
    long values failed whole runs there only)."""
    wh = _warehouse_for(pg_url, tmp_path)
    try:
        for name in [*REGRESSIONS, *REFUSED]:
            _run_fixed(wh, name)
        record("bad_input_corpus", "fixed_cases_postgresql", dict(wh.figures))
    finally:
        wh.engine.dispose()


def test_first_line_of_megabytes_is_refused_clearly(sqlite_url: str, tmp_path: Path) -> None:
    """A first line longer than Python csv's field limit raised csv.Error (a traceback)."""
    wh = _warehouse_for(sqlite_url, tmp_path)
    path = tmp_path / "huge_header.csv"
    path.write_bytes(("x" * 300_000 + "\n").encode() + _file(_rows(2)))
    result = wh.cli("etl", "--source", str(path))
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert errors == [
        f"Error: {path}: the first line is not a CSV header (field larger than field limit (131072)); expected {', '.join(SOURCE_COLUMNS)}"
    ]
    wh.engine.dispose()


def test_line_total_beyond_numeric_18_3_is_out_of_range(sqlite_url: str, tmp_path: Path) -> None:
    """With the bounds raised to their maximum, quantity x price can exceed NUMERIC(18, 3) (and
    int64 thousandths): such a line is out of range, not a wrapped-around total."""
    wh = _warehouse_for(sqlite_url, tmp_path)
    path = tmp_path / "big.csv"
    path.write_bytes(_file(["1,BIG,d,2000000000,2010-12-01 08:26:00,999999999999,1,UK", "2,OK,d,2,2010-12-01 08:26:00,1.5,1,UK"]))
    env = {"RDP_RULES__MAX_ABS_QUANTITY": "2147483647", "RDP_RULES__MAX_UNIT_PRICE": "999999999999"}
    result = Cli(sqlite_url)("etl", "--source", str(path), "--format", "json", env=env)
    assert result.exit_code == 0, result.output
    assert wh.rows("SELECT stock_code, reasons FROM etl_quarantine") == [("BIG", "out_of_range")]
    assert wh.rows("SELECT invoice_no, line_total FROM fact_sales") == [("2", 3.0)]
    too_big = Cli(sqlite_url)("config", "show", env={"RDP_RULES__MAX_ABS_QUANTITY": "3000000000"})
    assert too_big.exit_code == 1 and "rules.max_abs_quantity: Input should be less than or equal to 2147483647" in too_big.output
    wh.engine.dispose()


def test_error_about_a_huge_header_stays_short(sqlite_url: str, tmp_path: Path) -> None:
    """A header of 100 KB (under csv's field limit) without the required columns: the `Error:`
    line listed every byte of it."""
    path = tmp_path / "wide.csv"
    path.write_bytes((",".join(f"column_{i}_" + "x" * 200 for i in range(500)) + "\n1,2\n").encode())
    result = Cli(sqlite_url)("etl", "--source", str(path))
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output
    assert errors[0].startswith(f"Error: {path}: required column(s) InvoiceNo,") and "… (500 columns)" in errors[0]
    assert len(errors[0]) < 1000
