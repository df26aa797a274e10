"""Files the platform writes that may hold data — logs, exports, the query cache, quarantine
exports, alert files, the PID file — are user-only: files 0600, the folders it creates for them
0700 (whatever the umask). Folders that already exist keep their mode, except the platform's own
(`own=True`: the log and cache folders), which are tightened to 0700.

Documents made to be read by others — the HTML dashboard and the quality reports written with
`--output` — follow the user's umask like any file the user makes (`write_shared`: 0644 under
the usual umask 022).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path, own: bool = False) -> Path:
    """Create `path` and its missing parents with mode 0700; `own`: make an existing `path` 0700 too."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile: fine
            folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)  # mkdir's mode is reduced by the umask, never widened: set it
    if own and not missing:
        restrict(path)
    return path


def restrict(path: Path) -> None:
    """Make an existing file 0600 (a folder 0700). A file of another user keeps its mode."""
    with contextlib.suppress(PermissionError, FileNotFoundError):
        os.chmod(path, DIR_MODE if Path(path).is_dir() else FILE_MODE)


def private_open(path: Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None, parents: bool = False) -> IO[Any]:
    """Open `path` for writing ('w', 'a', 'wb' or 'ab') as a user-only file: created 0600, an
    existing file made 0600 before anything is written to it. `parents`: create missing folders
    (0700); otherwise a missing folder is an OSError, as for open()."""
    path = Path(path)
    if parents:
        private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    with contextlib.suppress(PermissionError):  # not our file: we may write it, not change its mode
        os.fchmod(fd, FILE_MODE)
    binary = "b" in mode
    return os.fdopen(fd, mode, encoding=None if binary else encoding, newline=None if binary else newline)


def write_private(path: Path, text: str, parents: bool = False) -> int:
    """Write `text` (UTF-8) to a user-only file, atomically: a temporary file (0600) in the same
    folder renamed over `path`, so a reader never sees half a file. Returns the bytes written.
    `parents`: create missing folders (0700); otherwise a missing folder is an OSError."""
    path = Path(path)
    if parents:
        private_dir(path.parent)
    return _write_atomic(path, text.encode("utf-8"), FILE_MODE)


def write_shared(path: Path, text: str) -> int:
    """Write `text` (UTF-8) to `path` atomically, as write_private, but with the mode the user's
    umask gives a new file (0666 & ~umask), for documents meant to be shared. Returns the bytes written."""
    return _write_atomic(Path(path), text.encode("utf-8"), 0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: put it straight back
    os.umask(mask)
    return mask


def _write_atomic(path: Path, data: bytes, mode: int) -> int:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode != FILE_MODE:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


def touch_private(path: Path) -> Path:
    """Make sure `path` exists as a user-only file (for writers that open it themselves, like logging)."""
    private_open(path, "a", parents=True).close()
    return path
