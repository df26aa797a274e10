"""Incoming folders: which files of a folder or glob are new, settled and not loaded yet.

A file counts as loaded when the run ledger holds a successful run of a file with the same
SHA-256, whatever its name or folder, so a file dropped twice (or left in place) loads once.
Checksums are cached by (path, size, modification time), so a folder polled every few seconds
is not read again and again.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from scheduling.definitions import is_glob
from utils.errors import SourceError

log = logging.getLogger(__name__)

FOLDER_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2")
_TEMPORARY = (".tmp", ".part", ".partial", ".crdownload", ".filepart")
_BLOCK = 1 << 20


@dataclass
class Listing:
    """The candidate files of a source, in name order, and the ones still being written."""

    files: list[Path]
    unsettled: list[Path] = field(default_factory=list)
    note: str | None = None


def _visible(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and not name.startswith((".", "~")) and not name.endswith(_TEMPORARY)


def candidates(source: str) -> tuple[list[Path], str | None]:
    """Files named by a job's source (a file, a folder, or a glob), sorted by name; with a note if none."""
    if is_glob(source):
        found = [Path(p) for p in glob.glob(source)]
        files = sorted((p for p in found if _visible(p)), key=lambda p: (p.name, str(p)))
        return files, None if files else f"no files match {source}"
    path = Path(source)
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if _visible(p) and p.name.lower().endswith(FOLDER_SUFFIXES)), key=lambda p: p.name)
        return files, None if files else f"no CSV files in {path}"
    if path.exists():
        return [path], None
    if not path.parent.is_dir():
        raise SourceError(
            f"{path}: neither the file nor its folder exists; create the folder or fix the job's source (schedule daily --replace …)"
        )
    return [], f"{path} does not exist (yet)"


def list_settled(source: str, settle_seconds: float, now: float | None = None) -> Listing:
    """Candidate files, minus those modified within `settle_seconds` (still being written)."""
    files, note = candidates(source)
    now = time.time() if now is None else now
    ready, unsettled = [], []
    for path in files:
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:  # moved away between listing and stat
            continue
        (ready if age >= settle_seconds else unsettled).append(path)
    return Listing(ready, unsettled, note)


class ChecksumCache:
    """SHA-256 of files, remembered while their size and modification time stay the same."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, int], str]] = {}

    def checksum(self, path: Path) -> str:
        stat = path.stat()
        key, stamp = str(path), (stat.st_size, stat.st_mtime_ns)
        known = self._known.get(key)
        if known and known[0] == stamp:
            return known[1]
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                digest.update(block)
        self._known[key] = (stamp, digest.hexdigest())
        return digest.hexdigest()

    def keep_only(self, paths: list[Path]) -> None:
        """Forget files that are gone, so the cache never outgrows the folder."""
        current = {str(p) for p in paths}
        for key in [k for k in self._known if k not in current]:
            del self._known[key]


def file_stamp(path: Path) -> tuple[str, int, int]:
    """Identity of a file's current content for 'failed before and unchanged'."""
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


def archive(path: Path, archive_dir: Path, checksum: str) -> Path:
    """Move a loaded file into `archive_dir` (a name already there gets the checksum appended)."""
    archive_dir.mkdir(parents=True, exist_ok=True)
    target = archive_dir / path.name
    if target.exists():
        target = archive_dir / f"{path.name}.{checksum[:12]}"
    shutil.move(str(path), str(target))
    log.info("archived %s to %s", path, target)
    return target
