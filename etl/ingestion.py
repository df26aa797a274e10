"""Readers: a source file becomes DataFrame chunks of text columns with source row numbers.

The file is checked first (exists, is a file, not empty, text, has the required header), and
one streaming pass learns its SHA-256, its encoding and what its lines look like (how many,
the longest, whether their quoting is plain). Then pyarrow's streaming CSV reader parses it
block by block; a file whose quoting is not plain (a stray quote would make pyarrow swallow the
following lines), or whose text is UTF-16/32 or mixes UTF-8 with Windows-1252, is read line by
line instead (etl/linereader.py). Either way every non-empty line after the header is one
record: a row, or a `malformed` record that ends in the quarantine with its text.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from etl import linereader
from etl.mapping import resolve_columns
from utils.errors import SourceError
from utils.vocabulary import SOURCE_COLUMNS

_BLOCK = 1 << 20
_BINARY_MAGIC = {
    b"PK\x03\x04": "a zip archive or Excel workbook",
    b"%PDF": "a PDF document",
    b"\x7fELF": "an executable",
    b"SQLite format 3": "an SQLite database",
}
_COMPRESSION = {".gz": "gzip", ".bz2": "bz2"}


@dataclass(frozen=True)
class SourceInfo:
    """What the pre-flight pass learned about a source file."""

    path: Path
    checksum: str
    encoding: str
    size_bytes: int
    header: list[str]
    compression: str | None = None
    bytes_per_row: float = 100.0
    columns: dict[str, str] = field(default_factory=dict)  # raw header -> canonical column
    longest_line: int = 0  # bytes of the longest line
    line_by_line: str | None = None  # why the file is read line by line (None: pyarrow's parser)

    @property
    def estimated_rows(self) -> int | None:
        """Rows expected from the file size (None for compressed files)."""
        return None if self.compression else max(1, int(self.size_bytes / self.bytes_per_row))


@dataclass
class Chunk:
    """One block of source rows: text columns, their 1-based source row numbers, bad lines."""

    frame: pd.DataFrame
    source_rows: np.ndarray
    malformed: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return len(self.frame) + len(self.malformed)


@dataclass
class _Scan:
    checksum: str
    encoding: str  # detected
    head: bytes  # the first block of the (decompressed) text
    lines: linereader.LineStats
    wide: str | None  # utf-16 / utf-32 (byte-order mark)
    utf8_ok: bool
    cp1252_ok: bool


def _open_stream(path: Path, compression: str | None) -> io.BufferedIOBase:
    if compression == "gzip":
        import gzip

        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == "bz2":
        import bz2

        return bz2.open(path, "rb")  # type: ignore[return-value]
    return open(path, "rb")


def _file_checks(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"{path}: file not found; check the --source path")
    if path.is_dir():
        raise SourceError(f"{path}: is a directory; pass a CSV file")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: the file is empty; expected a header line and sales rows")


def _looks_binary(head: bytes) -> str | None:
    for magic, what in _BINARY_MAGIC.items():
        if head.startswith(magic):
            return what
    if linereader.wide_encoding(head):
        return None
    sample = head[:8192]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 13, 12, 27))
    return "binary data" if sample and controls / len(sample) > 0.05 else None


def _blocks(path: Path, compression: str | None) -> Iterator[bytes]:
    try:
        with _open_stream(path, compression) as stream:
            yield from iter(lambda: stream.read(_BLOCK), b"")
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot be read as {compression or 'text'} ({exc}); is the file complete?") from None


def _scan(path: Path, compression: str | None, delimiter: str) -> _Scan:
    """One pass: SHA-256 of the stored bytes, the text encoding, the first block, line statistics."""
    digest = hashlib.sha256()
    if compression:
        with open(path, "rb") as raw:
            for block in iter(lambda: raw.read(_BLOCK), b""):
                digest.update(block)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    utf8_ok, cp1252_ok, multibyte, head = True, True, False, b""
    stats = linereader.LineStats(delimiter)
    wide: str | None = None
    wide_decoder = None
    for block in _blocks(path, compression):
        if not compression:
            digest.update(block)
        if not head:
            head = block
            wide = linereader.wide_encoding(head)
            wide_decoder = linereader.decoder(wide) if wide else None
        if wide_decoder is not None:
            stats.feed(_wide_text(path, wide_decoder, block, wide).encode("utf-8"))
            continue
        stats.feed(block)
        plain = block.isascii()  # ASCII is valid in every candidate encoding: nothing more to learn
        if utf8_ok:
            try:
                utf8.decode(block)
                multibyte = multibyte or not plain  # valid UTF-8 that is not ASCII holds a multi-byte sequence
            except UnicodeDecodeError:
                utf8_ok = False
        if cp1252_ok and not plain:
            try:
                block.decode("cp1252")
            except UnicodeDecodeError:
                cp1252_ok = False
        if not utf8_ok and not multibyte and not plain:
            multibyte = linereader.has_utf8_multibyte(block)
    if wide_decoder is not None:
        stats.feed(_wide_text(path, wide_decoder, b"", wide, final=True).encode("utf-8"))
    elif utf8_ok:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_ok = False
    stats.close()
    encoding = wide or ("utf-8" if utf8_ok else linereader.MIXED_ENCODING if multibyte else "cp1252" if cp1252_ok else "latin-1")
    return _Scan(digest.hexdigest(), encoding, head, stats, wide, utf8_ok, cp1252_ok)


def _wide_text(path: Path, dec: codecs.IncrementalDecoder, block: bytes, name: str | None, final: bool = False) -> str:
    try:
        return dec.decode(block, final=final)
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{path}: starts with a {name} byte-order mark but is not valid {name} text ({exc.reason}); save it as UTF-8"
        ) from None


def _chosen_encoding(path: Path, scan: _Scan, wanted: str) -> str:
    """The detected encoding, or the forced one if the bytes really are in it."""
    if wanted == "auto" or wanted == scan.encoding:
        return scan.encoding
    fits = {"utf-8": scan.utf8_ok and not scan.wide, "cp1252": scan.cp1252_ok and not scan.wide, "latin-1": not scan.wide}
    if not fits.get(wanted, True):
        raise SourceError(
            f"{path}: etl.encoding is {wanted} but the file is not {wanted} text (it reads as {scan.encoding}); "
            "set etl.encoding to auto or to the file's encoding"
        )
    return wanted


def _header(
    path: Path, scan: _Scan, encoding: str, delimiter: str, column_map: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    text = linereader.decoder(encoding).decode(scan.head).lstrip("\ufeff")  # a character cut at the block's end waits
    if not text.strip():
        raise SourceError(f"{path}: the file is empty; expected a header line and sales rows")
    first = next(linereader.text_lines(iter([text.encode("utf-8")]), "utf-8"), ("", ""))[0]
    try:
        header = next(csv.reader([first], delimiter=delimiter), []) if first else []
    except csv.Error as exc:  # e.g. a first line of megabytes: no header
        raise SourceError(f"{path}: the first line is not a CSV header ({exc}); expected {', '.join(SOURCE_COLUMNS)}") from None
    columns = _columns(path, first, header, delimiter, column_map)  # a wrong header is the more useful message
    if scan.lines.lines <= 1:
        raise SourceError(f"{path}: has a header line but no data rows")
    return header, columns


OTHER_DELIMITERS = (";", "\t", "|", ",")
_SHOWN = {"\t": "$'\\t'"}


def _columns(path: Path, first: str, header: list[str], delimiter: str, column_map: dict[str, str] | None) -> dict[str, str]:
    """The header's columns; a header that holds them when split at another delimiter (an extract
    saved with ';', tabs or '|') is an error saying which delimiter was found and how to pass it."""
    try:
        return resolve_columns(header, column_map, str(path))
    except SourceError:
        found = next((d for d in OTHER_DELIMITERS if d != delimiter and d in first and _resolves(first, d, column_map)), None)
        if found is None:
            raise
    name = "tabs" if found == "\t" else repr(found)
    option = _SHOWN.get(found, repr(found))
    raise SourceError(
        f"{path}: the header line is separated by {name}, not by {delimiter!r}; "
        f"pass --delimiter {option} (or set etl.delimiter in the config)"
    ) from None


def _resolves(first: str, delimiter: str, column_map: dict[str, str] | None) -> bool:
    try:
        resolve_columns(next(csv.reader([first], delimiter=delimiter), []), column_map, "")
    except (SourceError, csv.Error):
        return False
    return True


def _line_by_line(scan: _Scan, encoding: str, delimiter: str) -> str | None:
    """Why the fast parser cannot be trusted with this file (None: it can)."""
    if scan.wide:
        return f"{scan.wide} text"
    if encoding == linereader.MIXED_ENCODING:
        return "UTF-8 mixed with Windows-1252"
    if len(delimiter.encode()) != 1:
        return "a delimiter that is not one byte"
    if scan.lines.irregular is not None:
        return f"quoting that is not plain, first in: {scan.lines.irregular}"
    return None


def inspect_source(path: Path, encoding: str = "auto", delimiter: str = ",", column_map: dict[str, str] | None = None) -> SourceInfo:
    """Check a source file and learn its checksum, encoding and header (SourceError if unusable)."""
    path = Path(path)
    _file_checks(path)
    compression = _COMPRESSION.get(path.suffix.lower())
    with open(path, "rb") as raw:
        what = _looks_binary(raw.read(8192)) if compression is None else None
    if what:
        raise SourceError(f"{path}: looks like {what}, not a CSV text file; export the sales as CSV")
    scan = _scan(path, compression, delimiter)
    if compression and _looks_binary(scan.head):
        raise SourceError(f"{path}: the compressed content is not CSV text")
    chosen = _chosen_encoding(path, scan, encoding)
    header, columns = _header(path, scan, chosen, delimiter, column_map)
    per_row = len(scan.head) / max(1, scan.head.count(b"\n"))
    return SourceInfo(
        path, scan.checksum, chosen, path.stat().st_size, header, compression, per_row, columns,
        scan.lines.longest, _line_by_line(scan, chosen, delimiter),
    )  # fmt: skip


def read_chunks(info: SourceInfo, chunk_size: int, delimiter: str = ",") -> Iterator[Chunk]:
    """Yield chunks of about `chunk_size` records; every record is in exactly one chunk.

    Source rows are record numbers (1 = first data row; empty lines are not records)."""
    if info.line_by_line:
        return _line_chunks(info, chunk_size, delimiter)
    return _parsed_chunks(info, chunk_size, delimiter)


def read_range(info: SourceInfo, header: bytes, start: int, end: int, delimiter: str = ",") -> Chunk:
    """The records of bytes [start, end) of a file the fast parser reads, as one chunk numbered
    from 1 (the Dask engine's partition; the caller adds the records before `start`). `header`
    is the file's header line; start and end must be line starts (a file read by the fast parser
    has no line break inside a quoted value: the scan sends such files to the line reader)."""
    with open(info.path, "rb") as fh:
        fh.seek(start)
        body = fh.read(end - start)
    stream = pa.BufferReader(header + body)
    chunks = list(_parsed_chunks(info, len(body) + 1, delimiter, stream))  # at most one record per byte: one chunk
    if not chunks:
        return _text_chunk([], [], [])
    return chunks[0]


def _parsed_chunks(info: SourceInfo, chunk_size: int, delimiter: str, stream: pa.NativeFile | None = None) -> Iterator[Chunk]:
    """pyarrow's streaming parser. It parses one block ahead, so a malformed line may be reported
    before the rows in front of it are returned: malformed records wait in `bad` until the
    chunk whose span contains them is cut."""
    bad: list[tuple[int, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        detail = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        bad.append((int(row.number or 0) - 1, row.text, detail))
        return "skip"

    names = info.columns
    reader = pacsv.open_csv(
        stream or pa.input_stream(str(info.path), compression=info.compression),
        read_options=pacsv.ReadOptions(block_size=_block_size(info, chunk_size), use_threads=False, encoding=info.encoding),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
            include_columns=list(names),
        ),
    )
    first, pending = 1, None
    for batch in _batches(info, reader):
        pending = pa.Table.from_batches([batch]) if pending is None else pa.concat_tables([pending, pa.Table.from_batches([batch])])
        while pending.num_rows >= chunk_size:
            chunk, first = _make_chunk(pending.slice(0, chunk_size), bad, first, names, final=False)
            pending = pending.slice(chunk_size)
            yield chunk
    if (pending is not None and pending.num_rows) or bad:
        chunk, first = _make_chunk(pending, bad, first, names, final=True)
        yield chunk


def _valid_rows(first: int, n_valid: int, bad_rows: list[int]) -> np.ndarray:
    """Record numbers of `n_valid` rows starting at `first`, skipping malformed records."""
    span = np.arange(first, first + n_valid + len(bad_rows), dtype=np.int64)
    return span[~np.isin(span, bad_rows)][:n_valid] if bad_rows else span[:n_valid]


def _make_chunk(
    table: pa.Table | None, bad: list[tuple[int, str, str]], first: int, names: dict[str, str], final: bool
) -> tuple[Chunk, int]:
    n_valid = table.num_rows if table is not None else 0
    bad.sort()
    rows = _valid_rows(first, n_valid, [r for r, _, _ in bad])
    last = int(rows[-1]) if n_valid else first - 1
    mine = list(bad) if final else [b for b in bad if b[0] <= last]
    bad[:] = [] if final else [b for b in bad if b[0] > last]
    if table is None:
        frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in SOURCE_COLUMNS})
    else:
        frame = table.rename_columns([names[c] for c in table.column_names]).to_pandas()[list(SOURCE_COLUMNS)]
    return Chunk(frame, rows, mine), last + 1


# pyarrow's streaming CSV reader reads up to 32 blocks ahead on its I/O thread (Arrow C++'s
# background generator queue), so the block size, not the chunk, bounds the reader's memory:
# 32 blocks of 256 KiB instead of 32 blocks of a whole chunk.
_MAX_BLOCK = 256 << 10


def _block_size(info: SourceInfo, chunk_size: int) -> int:
    """Bytes per parser block: about `chunk_size` rows but at most _MAX_BLOCK (a chunk is then
    cut from several blocks), and always room for the longest line (pyarrow refuses a row that
    straddles two blocks)."""
    return int(max(min(max(chunk_size * info.bytes_per_row * 1.02, 64 << 10), _MAX_BLOCK), 2 * info.longest_line + (64 << 10)))


def _batches(info: SourceInfo, reader: pacsv.CSVStreamingReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{info.path}: cannot be parsed as CSV ({exc}); check quoting and the delimiter") from None
        yield batch


def _line_chunks(info: SourceInfo, chunk_size: int, delimiter: str) -> Iterator[Chunk]:
    """The line-by-line reader (etl/linereader.py), cut into chunks like the parsed ones."""
    positions = [info.header.index(raw) for raw in _by_canonical(info)]
    rows: list[list[str]] = []
    numbers: list[int] = []
    bad: list[tuple[int, str, str]] = []
    lines = linereader.text_lines(_blocks(info.path, info.compression), info.encoding)
    try:
        for number, (fields, text, problem) in enumerate(linereader.records(lines, len(info.header), delimiter), start=1):
            if fields is None:
                bad.append((number, text, problem))
            else:
                rows.append([fields[i] for i in positions])
                numbers.append(number)
            if len(rows) + len(bad) >= chunk_size:
                yield _text_chunk(rows, numbers, bad)
                rows, numbers, bad = [], [], []
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{info.path}: is not valid {info.encoding} text ({exc.reason}); set etl.encoding to the file's encoding"
        ) from None
    if rows or bad:
        yield _text_chunk(rows, numbers, bad)


def _by_canonical(info: SourceInfo) -> list[str]:
    """The raw header of each canonical column, in SOURCE_COLUMNS order."""
    raw = {canonical: header for header, canonical in info.columns.items()}
    return [raw[c] for c in SOURCE_COLUMNS]


def _text_chunk(rows: list[list[str]], numbers: list[int], bad: list[tuple[int, str, str]]) -> Chunk:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in SOURCE_COLUMNS]
    table = pa.table({c: pa.array(values, type=pa.string()) for c, values in zip(SOURCE_COLUMNS, columns, strict=True)})
    return Chunk(table.to_pandas(), np.asarray(numbers, dtype=np.int64), list(bad))
