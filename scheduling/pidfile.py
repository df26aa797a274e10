"""The daemon's PID file, held with an exclusive `flock` while the daemon lives.

The lock, not the file's existence, says "running": a daemon killed with SIGKILL leaves the
file behind but the OS drops its lock, so the next start takes over, and a recycled PID is
never mistaken for a live daemon.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from utils.errors import PlatformError
from utils.files import FILE_MODE, private_dir


class PidFile:
    """`with PidFile(path):` holds the file for the life of the daemon; refuses a second daemon."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.replaced_pid: int | None = None

    def __enter__(self) -> PidFile:
        private_dir(self.path.parent)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = _read_pid(self.path)
                raise PlatformError(
                    f"the scheduler is already running (pid {pid}, pid file {self.path}); stop it first with python main.py schedule stop"
                ) from None
            if _same_file(fd, self.path):  # not unlinked by a daemon that was just exiting
                self._fd = fd
                os.fchmod(fd, FILE_MODE)  # a file left by an older version may be wider
                self.replaced_pid = _read_fd_pid(fd)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                os.fsync(fd)
                return self
            os.close(fd)
        raise PlatformError(f"could not take the pid file {self.path}; another scheduler is starting or stopping, try again")

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        if _same_file(self._fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # releases the lock
        self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _read_fd_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def running_pid(path: Path) -> int | None:
    """The PID of the live daemon holding `path`, or None (no file, or a stale one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_fd_pid(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def signal_daemon(path: Path, signum: int) -> int | None:
    """Send `signum` to the live daemon; returns its PID, or None when none is running."""
    pid = running_pid(path)
    if pid is None:
        return None
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return None
    return pid


def stop_daemon(path: Path, timeout_s: float) -> int:
    """SIGTERM the daemon and wait until it has exited (finishing its job first)."""
    pid = signal_daemon(path, signal.SIGTERM)
    if pid is None:
        raise PlatformError(f"the scheduler is not running (no live process holds {path})")
    deadline = time.monotonic() + timeout_s
    while running_pid(path) is not None:
        if time.monotonic() >= deadline:
            raise PlatformError(
                f"asked the scheduler (pid {pid}) to stop; after {timeout_s:g} s it is still finishing its current job and "
                "exits when that ends (see schedule status); a second schedule stop aborts the job and rolls its load back"
            )
        time.sleep(0.1)
    return pid
