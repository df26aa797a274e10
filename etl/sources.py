"""Sources: where an ETL run reads its rows from.

Every source yields the same `Chunk`s (the eight canonical columns as text, source row numbers,
malformed records), so every source gets the same cleaning, exactly-once loading, quarantine
and lineage. `open_source` picks the reader from the source string: an http(s) URL, a database
URL, or a file by its suffix (.csv, .tsv, .csv.gz, .csv.bz2, .zip, .xlsx).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pandas as pd

from config.settings import Settings
from etl.cleaning import Cleaner, malformed_rows
from etl.ingestion import Chunk, inspect_source, read_chunks
from etl.request import FILE_SUFFIXES, SourceOptions, source_kind
from etl.stopwatch import Stopwatch
from utils.errors import SourceError

Batch = tuple[pd.DataFrame, pd.DataFrame, int]  # a cleaned chunk: accepted rows, rejected rows, rows read


class Source(Protocol):
    """A readable source: what the ledger records about it, and its rows, cleaned, in chunks."""

    location: str  # path or URL, credentials masked
    checksum: str | None  # SHA-256 of the stored bytes, when the source is a file
    encoding: str | None
    estimated_rows: int | None
    engine_name: str  # what reads and cleans it, shown as the run's engine
    header: list[str] | None  # the header line as read, for schema drift (None where the source has no header line)

    def chunks(self, chunk_size: int) -> Iterator[Chunk]: ...

    def cleaned_batches(self, cleaner: Cleaner, chunk_size: int, stopwatch: Stopwatch) -> Iterator[Batch]: ...


class LocalSource:
    """A source this process reads and cleans itself, chunk after chunk (the pandas engine); the
    Dask engine's source cleans on its workers instead (etl/dask_engine.py)."""

    engine_name = "pandas"
    header: list[str] | None = None

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        raise NotImplementedError

    def cleaned_batches(self, cleaner: Cleaner, chunk_size: int, stopwatch: Stopwatch) -> Iterator[Batch]:
        """(accepted, rejected, rows read) of each chunk, in source order."""
        chunks = self.chunks(chunk_size)
        while True:
            with stopwatch.timed("read"):
                chunk = next(chunks, None)
            if chunk is None:
                return
            with stopwatch.timed("clean"):
                accepted, rejected = _clean_chunk(cleaner, chunk)
            rows_read = chunk.rows_read
            del chunk
            yield accepted, rejected, rows_read


def _clean_chunk(cleaner: Cleaner, chunk: Chunk) -> tuple[pd.DataFrame, pd.DataFrame]:
    result = cleaner.clean(chunk.frame, chunk.source_rows)
    if not chunk.malformed:
        return result.accepted, result.rejected
    return result.accepted, pd.concat([result.rejected, malformed_rows(chunk.malformed)], ignore_index=True)


class CsvSource(LocalSource):
    """A delimited text file, plain or gzip/bz2-compressed."""

    def __init__(self, path: Path, settings: Settings, options: SourceOptions) -> None:
        self.delimiter = options.delimiter or ("\t" if path.suffix.lower() == ".tsv" else settings.etl.delimiter)
        self.info = inspect_source(path, options.encoding or settings.etl.encoding, self.delimiter, options.column_map)
        self.location = str(path.resolve())
        self.checksum = self.info.checksum
        self.encoding = self.info.encoding
        self.estimated_rows = self.info.estimated_rows
        self.header = self.info.header

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        return read_chunks(self.info, chunk_size, self.delimiter)


def open_source(spec: str, settings: Settings, options: SourceOptions | None = None) -> Source:
    """The reader for `spec` by its kind (`etl.request.source_kind`); checks it can be read, SourceError otherwise."""
    options = options or SourceOptions()
    kind = source_kind(spec)
    if kind == "http":
        from etl.api_source import ApiSource

        return ApiSource(spec, settings, options)
    if kind == "database":
        from etl.db_source import DatabaseSource

        return DatabaseSource(spec, settings, options)
    if kind == "workbook":
        from etl.workbook import WorkbookSource

        return WorkbookSource(Path(spec), settings, options)
    if kind == "zip":
        from etl.zip_source import ZipSource

        return ZipSource(Path(spec), settings, options)
    return CsvSource(Path(spec), settings, options)


def expand_sources(spec: str) -> list[str]:
    """A folder or glob becomes its files in name order; anything else stays as it is."""
    if "://" in spec:
        return [spec]
    path = Path(spec)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.is_file() and p.name.lower().endswith(FILE_SUFFIXES))
        if not files:
            raise SourceError(f"{spec}: the folder holds no extract files ({', '.join(FILE_SUFFIXES)})")
        return files
    if any(ch in spec for ch in "*?["):
        files = sorted(p for p in glob.glob(spec) if Path(p).is_file())
        if not files:
            raise SourceError(f"{spec}: no file matches this pattern")
        return files
    return [spec]
