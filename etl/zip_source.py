"""Zip archives of CSV extracts: every member ending in .csv or .tsv, in name order, as one source.

Each member is extracted to a private folder in the system temp directory (one member at a
time, deleted as soon as it is read) and read by the CSV reader of etl/ingestion.py, so it gets
the same encoding detection, malformed-line handling and bounded memory as a plain CSV file.
Source rows continue across members: the first data row of the second member follows the last
row of the first. Duplicates are detected across members (the archive is one source).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from config.settings import Settings
from etl.ingestion import Chunk, SourceInfo, inspect_source, read_chunks
from etl.sources import LocalSource
from etl.workbook import check_file, sha256_file
from utils.errors import SourceError
from utils.files import private_open

log = logging.getLogger(__name__)

MEMBER_SUFFIXES = (".csv", ".tsv")


class ZipSource(LocalSource):
    """A zip archive holding one or more CSV/TSV extracts."""

    def __init__(self, path: Path, settings: Settings, options) -> None:
        self.path = Path(path)
        check_file(self.path, "zip archive")
        if not zipfile.is_zipfile(self.path):
            raise SourceError(f"{self.path}: is not a zip archive (or is damaged); check the file or pass the CSV itself")
        self.location = str(self.path.resolve())
        self.checksum = sha256_file(self.path)
        self._encoding = options.encoding or settings.etl.encoding
        self._delimiter = options.delimiter
        self._default_delimiter = settings.etl.delimiter
        self._column_map = options.column_map
        with zipfile.ZipFile(self.path) as archive:
            self.members = self._members(archive)
            self.infos = [self._inspect(archive, member) for member in self.members]
        self.encoding = "+".join(dict.fromkeys(info.encoding for info in self.infos))
        estimates = [info.estimated_rows for info in self.infos]
        self.estimated_rows = sum(estimates) if all(estimates) else None

    def _members(self, archive: zipfile.ZipFile) -> list[str]:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        members = sorted(
            i.filename
            for i in entries
            if i.filename.lower().endswith(MEMBER_SUFFIXES)
            and not i.filename.startswith("__MACOSX/")
            and not PurePosixPath(i.filename).name.startswith("._")
        )
        if not members:
            found = ", ".join(i.filename for i in entries[:10]) or "nothing"
            raise SourceError(f"{self.path}: the zip archive holds no .csv or .tsv file (found: {found}); put the extracts in as CSV")
        encrypted = [i.filename for i in entries if i.filename in members and i.flag_bits & 0x1]
        if encrypted:
            raise SourceError(f"{self.path}: member {encrypted[0]} is password-protected; extract it and load the CSV instead")
        return members

    def _delimiter_for(self, member: str) -> str:
        return self._delimiter or ("\t" if member.lower().endswith(".tsv") else self._default_delimiter)

    def _inspect(self, archive: zipfile.ZipFile, member: str) -> SourceInfo:
        """Check one member like a CSV file (header, encoding); errors name archive!member."""
        with _extracted(archive, member, self.path) as (tmp, label):
            info = _renamed_errors(lambda: inspect_source(tmp, self._encoding, self._delimiter_for(member), self._column_map), tmp, label)
        return info

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        return rechunk(self._member_chunks(chunk_size), chunk_size)

    def _member_chunks(self, chunk_size: int) -> Iterator[Chunk]:
        offset = 0
        with zipfile.ZipFile(self.path) as archive:
            for member, info in zip(self.members, self.infos, strict=True):
                with _extracted(archive, member, self.path) as (tmp, label):
                    log.info("%s: reading %s", self.path, member)
                    reader = read_chunks(dataclasses.replace(info, path=tmp), chunk_size, self._delimiter_for(member))
                    records = 0
                    for chunk in _renamed_iter(reader, tmp, label):
                        records += chunk.rows_read
                        if offset:
                            chunk.source_rows = chunk.source_rows + offset
                            chunk.malformed = [(row + offset, text, detail) for row, text, detail in chunk.malformed]
                        yield chunk
                    offset += records


def rechunk(chunks: Iterator[Chunk], size: int) -> Iterator[Chunk]:
    """Chunks of exactly `size` records (the last may be smaller) across member boundaries,
    so an archive is cut into the same chunks as the one CSV holding the same rows."""
    pending: list[Chunk] = []
    count = 0
    for chunk in chunks:
        while chunk.rows_read > size - count:
            head, chunk = _split(chunk, size - count)
            pending.append(head)
            yield _merge(pending)
            pending, count = [], 0
        if chunk.rows_read:
            pending.append(chunk)
            count += chunk.rows_read
        if count == size:
            yield _merge(pending)
            pending, count = [], 0
    if pending:
        yield _merge(pending)


def _split(chunk: Chunk, n: int) -> tuple[Chunk, Chunk]:
    """The first `n` records of a chunk and the rest (records are numbered contiguously)."""
    numbers = [*chunk.source_rows[:1].tolist(), *(row for row, _, _ in chunk.malformed)]
    last = min(numbers) + n - 1
    keep = chunk.source_rows <= last
    head = Chunk(chunk.frame[keep].reset_index(drop=True), chunk.source_rows[keep], [m for m in chunk.malformed if m[0] <= last])
    tail = Chunk(chunk.frame[~keep].reset_index(drop=True), chunk.source_rows[~keep], [m for m in chunk.malformed if m[0] > last])
    return head, tail


def _merge(chunks: list[Chunk]) -> Chunk:
    if len(chunks) == 1:
        return chunks[0]
    return Chunk(
        pd.concat([c.frame for c in chunks], ignore_index=True),
        np.concatenate([c.source_rows for c in chunks]),
        [m for c in chunks for m in c.malformed],
    )


class _extracted:
    """Context manager: one member extracted to a fresh temp folder, removed afterwards."""

    def __init__(self, archive: zipfile.ZipFile, member: str, path: Path) -> None:
        self.archive, self.member, self.path = archive, member, path
        self.folder: str | None = None

    def __enter__(self) -> tuple[Path, str]:
        self.folder = tempfile.mkdtemp(prefix="rdp-zip-")
        # Always a .csv name: the content is plain text and must not be taken for gzip/bz2.
        tmp = Path(self.folder) / (PurePosixPath(self.member).stem[:100] + ".csv")
        try:
            with self.archive.open(self.member) as src, private_open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            self.__exit__(None, None, None)
            raise SourceError(f"{self.path}!{self.member}: cannot be extracted ({exc}); is the archive complete?") from None
        return tmp, f"{self.path}!{self.member}"

    def __exit__(self, *exc_info) -> None:
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None


def _renamed_errors(call, tmp: Path, label: str):
    try:
        return call()
    except SourceError as exc:
        raise SourceError(str(exc).replace(str(tmp), label)) from None


def _renamed_iter(chunks: Iterator[Chunk], tmp: Path, label: str) -> Iterator[Chunk]:
    while True:
        try:
            chunk = next(chunks, None)
        except SourceError as exc:
            raise SourceError(str(exc).replace(str(tmp), label)) from None
        if chunk is None:
            return
        yield chunk
