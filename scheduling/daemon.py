"""The scheduler daemon: runs the warehouse's enabled jobs on time, one at a time.

It sleeps until the next job is due (`schedule`'s idle_seconds), waking early on a signal or
every `scheduler.reload_check_s` seconds (5) to see whether `scheduled_jobs` changed. SIGTERM / SIGINT: finish the job in
progress, then exit 0 (a second signal aborts the job; its load is rolled back). SIGHUP: look
for changed jobs now (the `schedule` commands send it after a change).

On Linux each job runs in a forked child process: whatever a load allocates goes back to the
OS when the child exits, so the daemon's own memory stays flat however long it runs, and a job
that crashes the interpreter cannot take the daemon down. The child dies with the daemon
(SIGKILL of the daemon kills the load, which rolls back), ignores terminal and service-manager
signals (which may reach the whole process group) and takes its orders from the daemon only:
SIGUSR1 = finish this job and stop retrying, SIGUSR2 = abort it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path

import schedule
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings
from database.errors import describe
from database.schema import ensure_schema
from scheduling import history, jobs
from scheduling.definitions import JobDef
from scheduling.pidfile import PidFile
from scheduling.runner import JobRunner, is_transient
from utils.errors import PlatformError
from utils.memory import release_memory
from utils.urls import mask_url

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
ISOLATE_JOBS = sys.platform.startswith("linux")  # a child per job needs fork and PR_SET_PDEATHSIG
MAX_START_WAIT_S = 60.0  # longest pause between tries while the warehouse is unreachable at start
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Daemon:
    """One scheduler process: the loaded jobs, the `schedule` timetable, and the signal state."""

    def __init__(self, engine: Engine, settings: Settings, pid_path: Path) -> None:
        self.engine, self.settings, self.pid_path = engine, settings, pid_path
        self.timetable = schedule.Scheduler()
        self.loaded: dict[str, tuple[JobDef, schedule.Job]] = {}
        self.persisted: dict[str, datetime | None] = {}
        self.stop_requested = False
        self.reload_requested = False
        self.busy = False
        self.child_pid: int | None = None
        self.aborted = False  # a job process was told to abort: the daemon then ends as if interrupted
        self.next_check = 0.0
        self.runner = JobRunner(engine, settings, stopping=lambda: self.stop_requested, sleep=self.wait)
        self._wake_r, self._wake_w = -1, -1

    # --- life cycle ----------------------------------------------------------------------

    def run(self, on_started: Callable[[], None] | None = None) -> int:
        """Run until a stop signal; returns the exit code (0). `on_started`: called once the PID file is held."""
        with self._signals(), PidFile(self.pid_path) as pid_file:  # handlers first: a SIGHUP may come once the file is held
            if on_started:
                on_started()
            if pid_file.replaced_pid:
                log.warning("replaced a stale pid file of pid %s (not running)", pid_file.replaced_pid)
            if not self._wait_for_warehouse():
                return 0
            missed = jobs.missed_jobs(self.engine)
            self.reload()
            log.info(
                "scheduler started: pid %s, %s job(s), warehouse %s",
                os.getpid(), len(self.loaded), mask_url(self.engine.url.render_as_string(hide_password=False)),
            )  # fmt: skip
            self.catch_up(missed)
            self._loop()
            log.info("scheduler stopped (pid %s)", os.getpid())
        return 0

    def _loop(self) -> None:
        while not self.stop_requested:
            self.timetable.run_pending()
            self._persist_next_runs()
            if self.stop_requested:
                break
            if self.reload_requested or time.monotonic() >= self.next_check:
                self._safe_reload()
            self.wait(self._sleep_seconds(), wake_on_reload=True)

    def _sleep_seconds(self) -> float:
        until_check = self.next_check - time.monotonic()
        idle = self.timetable.idle_seconds
        return max(0.0, until_check if idle is None else min(idle, until_check))

    def _wait_for_warehouse(self) -> bool:
        """Create missing tables; while the warehouse is unreachable, retry with backoff (other errors end the daemon)."""
        delay = max(self.settings.scheduler.retry_backoff_s, 0.5)
        while True:
            try:
                ensure_schema(self.engine, self.settings.warehouse)
                return True
            except (PlatformError, SQLAlchemyError) as exc:
                if isinstance(exc, SQLAlchemyError) and not is_transient(self.engine, exc):
                    raise describe(self.engine, exc) from None
                if not is_transient(self.engine, exc):
                    raise
                log.warning("warehouse not reachable (%s); trying again in %.1f s", str(exc).splitlines()[0], delay)
                if not self.wait(delay):
                    return False
                delay = min(delay * 2, MAX_START_WAIT_S)

    # --- signals ---------------------------------------------------------------------------

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """Install the handlers, and a wake-up pipe so a signal ends a sleep at once."""
        previous_fd = self._open_wake_pipe()
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _open_wake_pipe(self) -> int:
        """A pipe the signal machinery writes to on every signal, so `_nap` wakes at once;
        returns the previous wake-up fd."""
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        return signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
            return
        abort = self.stop_requested and self.busy  # a second stop signal during a job aborts it (rolled back)
        self.stop_requested = True
        if self.child_pid is not None:
            self.aborted = self.aborted or abort
            _tell(self.child_pid, signal.SIGUSR2 if abort else signal.SIGUSR1)
        elif abort:
            raise KeyboardInterrupt

    def wait(self, seconds: float, wake_on_reload: bool = False) -> bool:
        """Sleep up to `seconds`, waking at once on a stop signal; False when stopping."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (wake_on_reload and self.reload_requested):
                return True
            self._nap(remaining)
        return False

    def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`; a signal (through the wake-up pipe) ends it at once."""
        ready, _, _ = select.select([self._wake_r], [], [], seconds)
        if ready:
            os.read(self._wake_r, 512)

    # --- job definitions ---------------------------------------------------------------------

    def _safe_reload(self) -> None:
        try:
            self.reload()
        except (PlatformError, SQLAlchemyError) as exc:
            self.next_check = time.monotonic() + self.settings.scheduler.reload_check_s
            log.warning("could not read scheduled_jobs (%s); keeping the loaded jobs", str(exc).splitlines()[0])

    def reload(self) -> None:
        """Bring the timetable in line with `scheduled_jobs` (enabled jobs only)."""
        self.reload_requested = False
        self.next_check = time.monotonic() + self.settings.scheduler.reload_check_s
        wanted = {name: job for name, job in jobs.definitions(self.engine).items() if job.enabled}
        for name in [n for n, (job, _) in self.loaded.items() if wanted.get(n) != job]:
            self.timetable.cancel_job(self.loaded.pop(name)[1])
            self.persisted.pop(name, None)
            if name not in wanted:
                log.info("job '%s' removed or disabled", name)
        for name, job in wanted.items():
            if name not in self.loaded:
                self.loaded[name] = (job, jobs.attach(self.timetable, job, partial(self._run_due, name)))
                log.info("job '%s' loaded: %s, %s", name, job.describe(), job.what())
        self._persist_next_runs()

    def _persist_next_runs(self) -> None:
        for name, (_, entry) in self.loaded.items():
            if self.persisted.get(name) != entry.next_run:
                try:
                    jobs.record_next_run(self.engine, name, entry.next_run)
                    self.persisted[name] = entry.next_run
                except SQLAlchemyError as exc:
                    log.warning("could not record the next run of job '%s' (%s)", name, exc.__class__.__name__)

    # --- running ---------------------------------------------------------------------------------

    def _run_due(self, name: str) -> None:
        if self.stop_requested or name not in self.loaded:
            return
        self._run(self.loaded[name][0], "schedule")

    def _run(self, job: JobDef, trigger: str) -> None:
        self.busy = True
        try:
            if ISOLATE_JOBS:
                self._run_in_child(job, trigger)
            else:
                self.runner.run(job, trigger)
        except Exception:  # a bug in one job must not stop the others; logged with its traceback
            log.exception("job '%s' crashed the scheduler's runner; the daemon carries on", job.name)
        finally:
            self.busy = False
            release_memory()  # what the last load freed goes back to the OS

    def _run_in_child(self, job: JobDef, trigger: str) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            os._exit(self._child_main(job, trigger, parent))  # never returns into the daemon's loop
        self.child_pid = pid
        if self.stop_requested:  # a stop signal came between the fork and now
            _tell(pid, signal.SIGUSR1)
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                self._nap(0.2)
        finally:
            self.child_pid = None
        code = os.waitstatus_to_exitcode(status)
        if self.aborted:
            raise KeyboardInterrupt  # as when the job ran in this process: the daemon exits 1
        if code != 0:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            log.error("job '%s' ended its process abnormally (%s); the daemon carries on", job.name, how)

    def _child_main(self, job: JobDef, trigger: str, parent: int) -> int:
        """The job's process: dies with the daemon, obeys only the daemon's signals, runs the job once."""
        try:
            _die_with(parent)
            for signum in _SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
            self._open_wake_pipe()  # its own: the daemon's pipe stays the daemon's
            signal.signal(signal.SIGUSR1, self._on_child_signal)
            signal.signal(signal.SIGUSR2, self._on_child_signal)
            self.engine.dispose(close=False)  # never share the daemon's pooled connections
            self.runner.run(job, trigger)
            return 0
        except BaseException:
            log.exception("job '%s' failed in its process", job.name)
            return 1
        finally:
            logging.shutdown()

    def _on_child_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGUSR2:
            raise KeyboardInterrupt  # the daemon was told twice to stop: abort the job (rolled back)
        self.stop_requested = True

    def catch_up(self, missed: list[tuple[JobDef, datetime]]) -> None:
        """Runs missed while the daemon was down: once each (catch_up: once) or recorded as skipped."""
        policy = self.settings.scheduler.catch_up
        for job, due in missed:
            if self.stop_requested:
                return
            if job.name not in self.loaded:
                continue
            if policy == "once":
                log.info("job '%s' missed its run due at %s UTC: running it once now", job.name, due)
                self._run(self.loaded[job.name][0], "catch_up")
            else:
                message = f"missed the run due at {due} UTC while the scheduler was down; not run (scheduler.catch_up = skip)"
                log.info("job '%s' %s", job.name, message)
                history.record(self.engine, job.name, job.kind, "catch_up", "skipped", message)


def _tell(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the job's process has just ended
        os.kill(pid, signum)


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the daemon dies (even by SIGKILL)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the daemon died before the request took effect
        os._exit(1)
