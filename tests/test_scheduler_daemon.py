"""The scheduler daemon as a real subprocess (`python main.py schedule start`), on SQLite and PostgreSQL.

Dropped files load once; a half-written file waits; a job added elsewhere is picked up; SIGTERM
finishes the job in progress and exits 0; SIGKILL mid-load leaves the warehouse as it was and
the next start loads the file once; two daemons ("two machines") never run a job at once.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.settings import load_settings
from database.engine import make_engine
from sampledata.generator import generate_sales
from scheduling import jobs
from scheduling.definitions import JobDef
from scheduling.pidfile import PidFile, running_pid
from tests.conftest import ROOT, Cli, write_csv
from tests.test_cli_etl import one, q
from tests.test_scheduling import drop, rows, wait_for
from utils.errors import PlatformError

BIG_ROWS = 200_000


class DaemonProcess:
    """`schedule start` in a subprocess with its own PID file, log file and stderr file."""

    def __init__(self, url: str, folder: Path, name: str = "a", **settings: str) -> None:
        self.pid_file = folder / f"{name}.pid"
        self.stderr_path = folder / f"{name}.stderr"
        self.log_file = folder / "logs" / f"{name}.log"
        self.env = os.environ | {
            "RDP_SCHEDULER__PID_FILE": str(self.pid_file),
            "RDP_LOGGING__FILE": str(self.log_file),
            "RDP_SCHEDULER__SETTLE_SECONDS": "0",
            "RDP_SCHEDULER__RETRY_BACKOFF_S": "0.2",
        }
        self.env |= {f"RDP_SCHEDULER__{k.upper()}": v for k, v in settings.items()}
        self.command = [sys.executable, str(ROOT / "main.py"), "--database-url", url, "schedule", "start"]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command, env=self.env, cwd=folder, stdout=subprocess.DEVNULL, stderr=err)

    def wait_started(self) -> None:
        wait_for(lambda: running_pid(self.pid_file) == self.proc.pid or self.proc.poll() is not None, timeout=30)
        assert self.proc.poll() is None, self.stderr()

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until it exited)."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Started daemons are registered here and killed at the end if a test failed half-way."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.kill()


@pytest.fixture(scope="session")
def big_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated extract big enough that loading it takes a second or more."""
    path = tmp_path_factory.mktemp("big") / "big.csv"
    generate_sales(path, BIG_ROWS, seed=5)
    return path


def copy_aged(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    stamp = time.time() - 60
    os.utime(dst, (stamp, stamp))
    return dst


def count(url: str, sql: str) -> int:
    return int(one(url, sql))


def test_daemon_loads_dropped_files_once_reloads_jobs_and_stops_on_sigterm(
    warehouse_url: str, tmp_path: Path, daemons: list[DaemonProcess]
) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    cli = Cli(warehouse_url)
    assert cli("schedule", "every", "--name", "inbox", "--seconds", "1", "--source", str(inbox)).exit_code == 0
    daemon = DaemonProcess(warehouse_url, tmp_path, settle_seconds="1")
    daemons.append(daemon)
    daemon.wait_started()

    # another machine adds a job (no signal reaches this daemon): it is picked up within seconds
    settings = load_settings(overrides={"database": {"url": warehouse_url}}, default_files=())
    engine = make_engine(settings.database)
    jobs.add_job(engine, JobDef("elsewhere", "etl", "every", source=str(tmp_path / "not-yet.csv"), interval_s=1))
    engine.dispose()

    drop(inbox, "a_monday.csv", 1)
    wait_for(lambda: count(warehouse_url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'success'") == 1)

    # a file written slowly is not loaded half-written; a finished one next to it is loaded
    lines = write_csv(tmp_path / "full.csv", rows(3, 400)).read_bytes().splitlines(keepends=True)
    with open(inbox / "c_wednesday.csv", "wb") as out:
        for start in range(0, len(lines), 50):
            out.write(b"".join(lines[start : start + 50]))
            out.flush()
            if start == 100:
                drop(inbox, "b_tuesday.csv", 2)
            time.sleep(0.25)
    wait_for(lambda: count(warehouse_url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'success'") == 3)
    wait_for(lambda: q(warehouse_url, "SELECT 1 FROM job_runs WHERE job_name = 'elsewhere'"), timeout=15)

    status = cli("schedule", "status", "--format", "json", env=daemon.env)
    assert '"running": true' in status.stdout and f'"pid": {daemon.proc.pid}' in status.stdout
    with pytest.raises(PlatformError, match=rf"the scheduler is already running \(pid {daemon.proc.pid}, pid file"):
        PidFile(daemon.pid_file).__enter__()  # what a second `schedule start` meets

    code, seconds = daemon.terminate()
    assert code == 0 and seconds < 5, daemon.stderr()
    assert not daemon.pid_file.exists()
    assert "Scheduler stopped." in daemon.stderr()

    runs = q(warehouse_url, "SELECT source, status, rows_read FROM etl_runs ORDER BY run_id")
    assert [(Path(s).name, st, n) for s, st, n in runs] == [
        ("a_monday.csv", "success", 3),
        ("b_tuesday.csv", "success", 3),
        ("c_wednesday.csv", "success", 400),  # the whole file, once
    ]
    assert count(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 406
    statuses = {r[0] for r in q(warehouse_url, "SELECT DISTINCT status FROM job_runs")}
    assert statuses <= {"success", "skipped"}
    waited = q(warehouse_url, "SELECT message FROM job_runs WHERE message LIKE '%still being written%'")
    assert waited, "the half-written file was never seen waiting"
    log = daemon.log_file.read_text()
    assert "job 'inbox' run " in log and "job 'elsewhere' loaded" in log


def test_sigkill_mid_load_leaves_warehouse_unchanged_and_restart_loads_once(
    warehouse_url: str, tmp_path: Path, big_extract: Path, daemons: list[DaemonProcess]
) -> None:
    copy_aged(big_extract, tmp_path / "in" / "big.csv")
    first = DaemonProcess(warehouse_url, tmp_path)
    Cli(warehouse_url)("schedule", "every", "--name", "inbox", "--seconds", "1", "--source", str(tmp_path / "in"), env=first.env)
    daemons.append(first)
    wait_for(lambda: q(warehouse_url, "SELECT 1 FROM etl_runs WHERE status = 'running'"), timeout=30, interval=0.05)
    time.sleep(0.3)
    first.kill()
    assert count(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 0
    assert q(warehouse_url, "SELECT status FROM etl_runs") == [("running",)], "the load finished before the kill; use a bigger file"

    second = DaemonProcess(warehouse_url, tmp_path)  # takes over the stale PID file
    daemons.append(second)
    wait_for(lambda: q(warehouse_url, "SELECT 1 FROM etl_runs WHERE run_id > 1 AND status = 'running'"), timeout=30, interval=0.05)
    code, _ = second.terminate(timeout=60)  # SIGTERM during the load: it finishes the load, then exits 0
    assert code == 0, second.stderr()

    runs = q(warehouse_url, "SELECT status, rows_read, rows_loaded, message FROM etl_runs ORDER BY run_id")
    assert [r[0] for r in runs] == ["failed", "success"]
    assert "interrupted" in runs[0][3]
    assert runs[1][1] == BIG_ROWS
    assert count(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == runs[1][2] > 0
    history = q(warehouse_url, "SELECT status, message FROM job_runs WHERE status <> 'skipped' ORDER BY job_run_id")
    assert history[0][0] == "failed" and history[0][1].startswith("interrupted")
    assert [h[0] for h in history[1:]] == ["success"]


def test_two_daemons_never_run_a_job_at_once_and_load_each_file_once(
    pg_url: str, tmp_path: Path, big_extract: Path, daemons: list[DaemonProcess]
) -> None:
    """Two machines sharing a PostgreSQL warehouse (the SQLite lock file is covered in test_scheduling)."""
    warehouse_url = pg_url
    inbox = tmp_path / "in"
    copy_aged(big_extract, inbox / "a_big.csv")
    drop(inbox, "b_small.csv", 2)
    drop(inbox, "c_small.csv", 3)
    machine_a = DaemonProcess(warehouse_url, tmp_path, "machine-a")
    Cli(warehouse_url)("schedule", "every", "--name", "inbox", "--seconds", "1", "--source", str(inbox), env=machine_a.env)
    daemons.append(machine_a)
    daemons.append(DaemonProcess(warehouse_url, tmp_path, "machine-b"))
    wait_for(lambda: count(warehouse_url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'success'") == 3, timeout=60)
    time.sleep(1.5)
    for daemon in daemons:
        code, _ = daemon.terminate(timeout=60)
        assert code == 0, daemon.stderr()

    runs = q(warehouse_url, "SELECT source, status FROM etl_runs ORDER BY run_id")
    assert [(Path(s).name, st) for s, st in runs] == [("a_big.csv", "success"), ("b_small.csv", "success"), ("c_small.csv", "success")]
    busy = q(warehouse_url, "SELECT COUNT(*) FROM job_runs WHERE message LIKE '%already running in another process%'")[0][0]
    assert busy >= 1, "the two daemons never met; the test proves nothing"
    worked = q(warehouse_url, "SELECT started_at, finished_at FROM job_runs WHERE message NOT LIKE '%already running%' ORDER BY started_at")
    for (_, prev_end), (next_start, _) in itertools.pairwise(worked):
        assert next_start >= prev_end, f"overlapping runs: {worked}"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="jobs run in a child process on Linux only")
def test_a_job_runs_in_its_own_process_whose_death_the_daemon_survives(
    sqlite_url: str, tmp_path: Path, big_extract: Path, daemons: list[DaemonProcess]
) -> None:
    """The load runs in a child of the daemon; killing that child (as the OOM killer would) fails
    the run cleanly, the daemon carries on, and the next run loads the file once."""
    copy_aged(big_extract, tmp_path / "in" / "big.csv")
    daemon = DaemonProcess(sqlite_url, tmp_path)
    daemons.append(daemon)
    Cli(sqlite_url)("schedule", "every", "--name", "inbox", "--seconds", "1", "--source", str(tmp_path / "in"), env=daemon.env)
    wait_for(lambda: q(sqlite_url, "SELECT pid FROM etl_runs WHERE status = 'running'"), timeout=30, interval=0.05)
    (child,) = q(sqlite_url, "SELECT pid FROM etl_runs WHERE status = 'running'")[0]
    assert child != daemon.proc.pid
    os.kill(child, signal.SIGKILL)
    wait_for(lambda: q(sqlite_url, "SELECT 1 FROM etl_runs WHERE status = 'success'"), timeout=60)
    assert daemon.proc.poll() is None, daemon.stderr()
    runs = q(sqlite_url, "SELECT status, rows_read, rows_loaded, pid FROM etl_runs ORDER BY run_id")
    assert [r[0] for r in runs] == ["failed", "success"]
    assert runs[1][1] == BIG_ROWS and count(sqlite_url, "SELECT COUNT(*) FROM fact_sales") == runs[1][2]
    assert runs[1][3] not in (child, daemon.proc.pid)  # each job run in a new process
    code, _ = daemon.terminate()
    assert code == 0
    assert "ended its process abnormally (signal 9)" in daemon.log_file.read_text()


def test_a_second_sigterm_aborts_the_load_in_progress(
    sqlite_url: str, tmp_path: Path, big_extract: Path, daemons: list[DaemonProcess]
) -> None:
    """First SIGTERM: finish the job; a second one: abort it (rolled back, recorded failed), exit 1."""
    copy_aged(big_extract, tmp_path / "in" / "big.csv")
    daemon = DaemonProcess(sqlite_url, tmp_path)
    daemons.append(daemon)
    Cli(sqlite_url)("schedule", "every", "--name", "inbox", "--seconds", "1", "--source", str(tmp_path / "in"), env=daemon.env)
    wait_for(lambda: q(sqlite_url, "SELECT 1 FROM etl_runs WHERE status = 'running'"), timeout=30, interval=0.05)
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert daemon.proc.poll() is None  # still finishing the load
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=30) == 1, daemon.stderr()
    assert count(sqlite_url, "SELECT COUNT(*) FROM fact_sales") == 0
    assert q(sqlite_url, "SELECT status FROM etl_runs") == [("failed",)]
