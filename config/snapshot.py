"""Validated settings kept on disk, keyed by a digest of everything they were built from.

Validating the layers needs pydantic, whose import costs a command more than the rest of its
start-up; the layers rarely change between two commands. The digest covers the code that
defines and checks the settings, each settings file's path, mode and bytes, every RDP_*
variable and the command-line overrides: any change gives another key, so a snapshot is never
stale, only unused.

The folder is `$XDG_CACHE_HOME/retail-data-platform/settings` (else `~/.cache/...`), or the
folder in RDP_SETTINGS_CACHE; `RDP_SETTINGS_CACHE=off` validates every time. Snapshots may
hold credentials (a database URL with its password), so the folder is the user's alone (0700,
files 0600), and one that others could write to is not read.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

ENV_VAR = "RDP_SETTINGS_CACHE"
KEEP = 32  # snapshots kept (the newest); each is a few kilobytes


class Store:
    """The snapshot folder of one user."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def of(cls, environ: dict[str, str]) -> Store | None:
        """The store `environ` chooses, or None when RDP_SETTINGS_CACHE is off or there is no home folder."""
        chosen = environ.get(ENV_VAR, "")
        if chosen.lower() == "off":
            return None
        if chosen:
            return cls(Path(chosen))
        if environ.get("XDG_CACHE_HOME"):
            return cls(Path(environ["XDG_CACHE_HOME"]) / "retail-data-platform" / "settings")
        if environ.get("HOME"):
            return cls(Path(environ["HOME"]) / ".cache" / "retail-data-platform" / "settings")
        return None  # no home to keep them in (a bare cron or service environment): validate every time

    def key(self, code: tuple[Path, ...], files: list[Path], env: dict[str, str], overrides: dict[str, Any] | None) -> str | None:
        """The digest of the inputs, or None when a file cannot be read (the loader reports it)."""
        digest = hashlib.sha256()
        try:
            for path in (*code, *files):
                stat = path.stat()
                digest.update(f"{path.resolve()}\0{stat.st_mode}\0{stat.st_size}\0".encode())
                digest.update(path.read_bytes())
        except OSError:
            return None
        digest.update(json.dumps([sorted(env.items()), overrides or {}], sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def load(self, key: str) -> Any | None:
        """The snapshot of `key`, or None (none yet, unreadable, or a folder others can write to)."""
        try:
            if not _private(self.folder.stat()):
                return None
            with open(self.folder / f"{key}.pickle", "rb") as fh:
                if os.fstat(fh.fileno()).st_uid != os.getuid():
                    return None
                return pickle.load(fh)
        except FileNotFoundError:
            return None
        except Exception:
            return None

    def save(self, key: str, value: Any) -> None:
        """Keep `value` under `key` (atomically); a folder that cannot be written is no error."""
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not _private(self.folder.stat()):
                return
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".pickle")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as fh:
                    pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, self.folder / f"{key}.pickle")
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._prune()
        except OSError:
            return

    def _prune(self) -> None:
        snapshots = sorted(self.folder.glob("*.pickle"), key=lambda p: p.stat().st_mtime_ns)
        for old in snapshots[:-KEEP]:
            old.unlink(missing_ok=True)


def _private(stat: os.stat_result) -> bool:
    """The folder is this user's and nobody else can write to it."""
    return stat.st_uid == os.getuid() and not stat.st_mode & 0o022
