"""Readers: a source file becomes DataFrame chunks of text columns with source row numbers.

The file is checked first (exists, is a file, not empty, text, has the required header), its
SHA-256 and encoding are determined in one streaming pass, then pyarrow's streaming CSV reader
parses it block by block. Lines with the wrong number of fields are not lost: they come back
as `malformed` records and end in the quarantine.
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

from etl.columns import SOURCE_COLUMNS
from etl.mapping import resolve_columns
from utils.errors import SourceError

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
    sample = head[:8192]
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 13, 12, 27))
    return "binary data" if sample and controls / len(sample) > 0.05 else None


def _scan(path: Path, compression: str | None) -> tuple[str, str, bytes]:
    """One pass: SHA-256 of the stored bytes, the text encoding, and the first block."""
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        for block in iter(lambda: raw.read(_BLOCK), b""):
            digest.update(block)
    utf8 = codecs.getincrementaldecoder("utf-8")()
    cp1252_ok, head = True, b""
    try:
        with _open_stream(path, compression) as stream:
            for block in iter(lambda: stream.read(_BLOCK), b""):
                head = head or block
                if utf8 is not None:
                    try:
                        utf8.decode(block)
                    except UnicodeDecodeError:
                        utf8 = None
                if cp1252_ok:
                    try:
                        block.decode("cp1252")
                    except UnicodeDecodeError:
                        cp1252_ok = False
    except (OSError, EOFError) as exc:
        raise SourceError(f"{path}: cannot be read as {compression or 'text'} ({exc}); is the file complete?") from None
    encoding = "utf-8" if utf8 is not None else "cp1252" if cp1252_ok else "latin-1"
    return digest.hexdigest(), encoding, head


def _header(path: Path, head: bytes, encoding: str, delimiter: str) -> list[str]:
    text = head.decode(encoding, errors="replace").lstrip("\ufeff")
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0].rstrip("\r")), delimiter=delimiter), [])
    if "\n" not in text.rstrip("\r\n") and len(head) < _BLOCK:
        resolve_columns(header, None, str(path))  # a wrong header is the more useful message
        raise SourceError(f"{path}: has a header line but no data rows")
    return header


def inspect_source(path: Path, encoding: str = "auto", delimiter: str = ",", column_map: dict[str, str] | None = None) -> SourceInfo:
    """Check a source file and learn its checksum, encoding and header (SourceError if unusable)."""
    path = Path(path)
    _file_checks(path)
    compression = _COMPRESSION.get(path.suffix.lower())
    with open(path, "rb") as raw:
        what = _looks_binary(raw.read(8192)) if compression is None else None
    if what:
        raise SourceError(f"{path}: looks like {what}, not a CSV text file; export the sales as CSV")
    checksum, detected, head = _scan(path, compression)
    if compression and _looks_binary(head):
        raise SourceError(f"{path}: the compressed content is not CSV text")
    chosen = detected if encoding == "auto" else encoding
    header = _header(path, head, chosen, delimiter)
    columns = resolve_columns(header, column_map, str(path))
    per_row = len(head) / max(1, head.count(b"\n"))
    return SourceInfo(path, checksum, chosen, path.stat().st_size, header, compression, per_row, columns)


def read_chunks(info: SourceInfo, chunk_size: int, delimiter: str = ",") -> Iterator[Chunk]:
    """Yield chunks of about `chunk_size` rows; every record is in exactly one chunk.

    Source rows are record numbers (1 = first data row). pyarrow parses one block ahead, so a
    malformed line may be reported before the rows in front of it are returned: malformed
    records wait in `bad` until the chunk whose span contains them is cut.
    """
    bad: list[tuple[int, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        detail = f"expected {row.expected_columns} fields, found {row.actual_columns}"
        bad.append((int(row.number or 0) - 1, row.text, detail))
        return "skip"

    names = info.columns
    reader = pacsv.open_csv(
        pa.input_stream(str(info.path), compression=info.compression),
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


def _block_size(info: SourceInfo, chunk_size: int) -> int:
    """Bytes per parser block so that one block holds about `chunk_size` rows."""
    return int(min(max(chunk_size * info.bytes_per_row * 1.02, 64 << 10), 512 << 20))


def _batches(info: SourceInfo, reader: pacsv.CSVStreamingReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{info.path}: cannot be parsed as CSV ({exc}); check quoting and the delimiter") from None
        yield batch
