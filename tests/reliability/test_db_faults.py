"""Database faults during `python main.py etl` (a real child process each time).

PostgreSQL: the run's connection terminated mid-load (pg_terminate_backend from another
session: the shared server stays up for everyone else; it stands in for a server stop and
restart), the lock-holding session terminated mid-load, a private throwaway cluster really
stopped mid-load and started again (skipped when initdb/pg_ctl are not available), connection
refused at start, statement timeouts. SQLite: the file locked by another process (the run fails
clearly, or waits and succeeds), another process writing to the file during the load.

Each ends in one clear `Error: ...` line and exit 1, or in a success after waiting: never a
partial load (metadata.checksums of every data table unchanged), a hang (every child has a
timeout) or a traceback; the ledger holds no run left 'running' once the next run has started,
and a re-run loads the extract exactly once.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from etl.ledger import INTERRUPTED
from metadata.checksums import warehouse_checksums
from sampledata.generator import generate_sales
from tests.conftest import Cli
from tests.reliability.helpers import (
    CliProcess,
    assert_accounted,
    assert_clean_failure,
    backends_in_schema,
    connected,
    ledger,
    line_integrity,
    publish,
    schema_of,
    settle,
    terminate,
    wait_for,
)

RESULTS: list[dict] = []
VICTIM = ["--chunk-size", "3000"]  # the run the fault hits writes in several chunks: a window to hit


@dataclass(frozen=True)
class Extracts:
    base: Path  # loaded before each fault: the state that must survive it
    mid: Path  # the run most faults hit (four chunks)
    big: Path  # the run whose lock session breaks: it must outlive a second run's start-up


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> Extracts:
    folder = tmp_path_factory.mktemp("faults")
    paths = Extracts(folder / "base.csv", folder / "mid.csv", folder / "big.csv")
    for path, rows, seed in ((paths.base, 3_000, 11), (paths.mid, 12_000, 12), (paths.big, 50_000, 13)):
        generate_sales(path, rows, seed=seed)
    return paths


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    publish("db_faults", "Database faults", RESULTS, ["backend", "fault", "exit", "error", "unchanged", "ledger", "rerun"])


def checksums(url: str) -> dict[str, str]:
    with connected(url) as engine:
        return warehouse_checksums(engine)


def load(url: str, source: Path) -> dict:
    """A load in this process (the set-up and the re-runs need no child process)."""
    result = Cli(url)("etl", "--source", str(source), "--format", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "success", summary
    return summary


def etl(url: str, source: Path, folder: Path, name: str, env: dict[str, str] | None = None) -> CliProcess:
    return CliProcess(url, ["etl", "--source", str(source), "--format", "json", *VICTIM], folder, name, env)


def rerun_exactly_once(url: str, source: Path) -> dict:
    """The run after the fault: it marks a run the fault left 'running' as failed and loads the
    extract once (read = loaded + quarantined + already loaded, no line twice)."""
    summary = load(url, source)
    runs = ledger(url)
    assert not [r for r in runs if r["status"] == "running"], runs
    assert_accounted(next(r for r in runs if r["run_id"] == summary["run_id"]))
    assert summary["rows_loaded"] > 0, "nothing of the extract was loaded: the fault's run committed part of it?"
    integrity = line_integrity(url)
    assert integrity["duplicate_facts"] == integrity["duplicate_quarantined"] == integrity["fact_and_quarantined"] == 0, integrity
    return summary


def finish(backend: str, fault: str, proc: CliProcess, code: int, error: str, unchanged: bool, run: dict | None, rerun: dict) -> None:
    RESULTS.append(
        {
            "backend": backend,
            "fault": fault,
            "exit": code,
            "error": short(error),
            "unchanged": unchanged,
            "ledger": f"run {run['run_id']} {run['status']}" if run else "no run opened",
            "rerun": f"run {rerun['run_id']} loaded {rerun['rows_loaded']:,}",
            "seconds": round(proc.elapsed, 2),
        }
    )


def short(error: str) -> str:
    """The error line without the warehouse URL (it differs in every test)."""
    return re.sub(r"^Error: warehouse \S+: ", "Error: warehouse …: ", error)[:150]


def the_run(url: str, before_max: int) -> dict | None:
    runs = [r for r in ledger(url) if r["run_id"] > before_max and r["kind"] == "load"]
    return runs[0] if runs else None


def max_run(url: str) -> int:
    return max((r["run_id"] for r in ledger(url)), default=0)


def options_with(url: str, extra: str) -> str:
    """The URL with more server settings in its `options` (after the fixture's search_path)."""
    parsed = make_url(url)
    options = f"{parsed.query.get('options', '')} {extra}".strip()
    return parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)


# -- PostgreSQL: the run's connection breaks --------------------------------------------------


@pytest.mark.postgres
def test_connection_of_the_run_terminated_mid_load(pg_url: str, extracts: Extracts, tmp_path: Path) -> None:
    """pg_terminate_backend on the session writing the load: clean failure, nothing loaded, ledger
    'failed'; the next run loads it once. (Stands in for a server stop/restart on the shared server.)"""
    load(pg_url, extracts.base)
    before, first = checksums(pg_url), max_run(pg_url)
    schema = schema_of(pg_url)
    proc = etl(pg_url, extracts.mid, tmp_path, "victim")
    writers = wait_for(lambda: backends_in_schema(pg_url, schema, "RowExclusiveLock", "fact_sales"), 60, 0.02, "the load to write")
    terminate(pg_url, writers)
    code = proc.wait()
    error = assert_clean_failure(proc, code, "connection", "is the server running")
    assert "SystemError" not in proc.stderr, proc.stderr  # the driver's own report of the break goes to the log
    settle(pg_url)
    run = the_run(pg_url, first)
    assert run is not None and run["status"] == "failed", run
    assert checksums(pg_url) == before, "a run whose connection broke changed the warehouse"
    finish(
        "postgresql",
        "run's connection terminated mid-load",
        proc,
        code,
        error,
        True,
        run,
        rerun_exactly_once(pg_url, extracts.mid),
    )


@pytest.mark.postgres
def test_lock_session_terminated_mid_load(pg_url: str, extracts: Extracts, tmp_path: Path) -> None:
    """The session holding the warehouse lock breaks while another connection of the run loads,
    and a second run takes the freed lock at once: the second must not write before the first
    has committed (the first's transaction lock), and the first must not report an error for a
    load it committed. Both succeed; every line is loaded once."""
    load(pg_url, extracts.base)
    first = max_run(pg_url)
    schema = schema_of(pg_url)
    proc = etl(pg_url, extracts.big, tmp_path, "victim")
    wait_for(lambda: backends_in_schema(pg_url, schema, "RowExclusiveLock", "fact_sales"), 60, 0.02, "the load to write")
    holders = lock_holders(pg_url)
    assert len(holders) == 1, holders
    terminate(pg_url, holders)
    second = etl(pg_url, extracts.big, tmp_path, "second")
    wait_for(lambda: len([r for r in ledger(pg_url) if r["run_id"] > first]) == 2 or second.proc.poll() is not None, 60, 0.02, "run 2")
    overlapped = proc.proc.poll() is None
    codes = proc.wait(), second.wait()
    assert codes == (0, 0), (proc.stderr[-2000:], second.stderr[-2000:])
    assert overlapped, "the first run had ended before the second started: the test proves nothing; use a bigger extract"
    assert "Traceback" not in proc.stderr + second.stderr and "Error:" not in proc.stderr + second.stderr
    assert "the connection holding the warehouse lock broke" in proc.stderr
    one, two = (r for r in ledger(pg_url) if r["run_id"] > first)
    assert (one["status"], two["status"]) == ("success", "success"), (one, two)
    assert one["rows_loaded"] > 0 and two["rows_loaded"] == 0 and two["rows_already_loaded"] == two["rows_read"], (one, two)
    for run in (one, two):
        assert_accounted(run)
    integrity = line_integrity(pg_url)
    assert integrity["duplicate_facts"] == integrity["fact_and_quarantined"] == 0, integrity
    RESULTS.append({"backend": "postgresql", "fault": "lock session terminated mid-load, a second run starts", "exit": codes[0],
                    "error": "- (warning: the lock connection broke; the load's own transaction lock held)", "unchanged": "-",
                    "ledger": f"run {one['run_id']} success, run {two['run_id']} success (0 new: all already loaded)",
                    "rerun": "(the second run)", "seconds": round(proc.elapsed, 2)})  # fmt: skip


def lock_holders(url: str) -> list[int]:
    """Sessions holding this warehouse's advisory lock."""
    from database.locks import WAREHOUSE_LOCK_ID, _scoped_key

    with connected(url) as engine, engine.connect() as conn:
        key = _scoped_key(conn, WAREHOUSE_LOCK_ID)
        rows = conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()) AND classid = :hi AND objid = :lo AND objsubid = 1"
            ),
            {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
        )
        return [p for (p,) in rows]


# -- PostgreSQL: a private cluster really stopped and started --------------------------------


@dataclass
class PrivateCluster:
    """A throwaway PostgreSQL cluster on a spare port, run as the `postgres` OS user."""

    bin_dir: Path
    data: Path
    port: int
    as_postgres: list[str]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        log = self.data.parent / "server.log"
        command = [*self.as_postgres, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w", "-t", "30", *args]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def start(self) -> None:
        socket_dir = self.data.parent
        self.pg_ctl("-o", f"-p {self.port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "stop")


@pytest.fixture
def private_cluster() -> Iterator[PrivateCluster]:
    """Skipped (whatever RDP_REQUIRE_POSTGRES says) when no initdb/pg_ctl or no way to run them."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: [int(x) for x in Path(p).parts[4].split(".")])
    if not found:
        pytest.skip("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) for a private cluster")
    bin_dir = Path(found[-1]).parent
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a postgres OS user to own a private cluster")
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root without runuser")
        as_postgres = [runuser, "-u", "postgres", "--"]
    home = Path(tempfile.mkdtemp(prefix="rdp-private-pg-"))
    if as_postgres:
        shutil.chown(home, "postgres", "postgres")
    cluster = PrivateCluster(bin_dir, home / "data", free_port(), as_postgres)
    try:
        command = [*as_postgres, str(bin_dir / "initdb"), "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "--no-sync"]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
        cluster.start()
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"a private PostgreSQL cluster could not be started: {exc}")
    try:
        yield cluster
    finally:
        with_suppressed(lambda: cluster.stop("immediate"))
        shutil.rmtree(home, ignore_errors=True)


def with_suppressed(action) -> None:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        action()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_private_server_stopped_mid_load_and_restarted(private_cluster: PrivateCluster, extracts: Extracts, tmp_path: Path) -> None:
    """`pg_ctl stop -m fast` while the load writes: clean failure; after `pg_ctl start` the
    warehouse is as before, the next run marks the broken run failed and loads the extract once."""
    url = private_cluster.url
    load(url, extracts.base)
    before, first = checksums(url), max_run(url)
    proc = etl(url, extracts.mid, tmp_path, "victim")
    wait_for(lambda: backends_in_schema(url, "public", "RowExclusiveLock", "fact_sales"), 60, 0.02, "the load to write")
    private_cluster.stop("fast")
    code = proc.wait()
    error = assert_clean_failure(proc, code)
    private_cluster.start()
    run = the_run(url, first)
    assert run is not None and run["status"] in ("running", "failed"), run
    assert checksums(url) == before, "a run cut off by a server stop changed the warehouse"
    rerun = rerun_exactly_once(url, extracts.mid)
    closed = next(r for r in ledger(url) if r["run_id"] == run["run_id"])
    assert closed["status"] == "failed" and (run["status"] == "failed" or closed["message"] == INTERRUPTED), closed
    finish("postgresql (private cluster)", "server stopped mid-load, restarted", proc, code, error, True, closed, rerun)


# -- PostgreSQL: refused, timeouts --------------------------------------------------------------


def test_connection_refused_at_start(extracts: Extracts, tmp_path: Path) -> None:
    """Nothing listens on the port: one clear error naming the problem, quickly, no traceback."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/rdp_test"
    proc = etl(url, extracts.base, tmp_path, "refused")
    code = proc.wait(timeout=60)
    error = assert_clean_failure(proc, code, "refused", "is the server running")
    RESULTS.append({"backend": "postgresql", "fault": "connection refused at start", "exit": code,
                    "error": short(error),
                    "unchanged": True, "ledger": "no run opened", "rerun": "-", "seconds": round(proc.elapsed, 2)})  # fmt: skip


@pytest.mark.postgres
def test_statement_timeouts(pg_url: str, extracts: Extracts, tmp_path: Path) -> None:
    """A statement_timeout from the URL options cancels a statement of the load: 300 ms with a lock
    on dim_date held by the test (so the cancel surely comes mid-run), then 1 ms (whichever
    statement it hits first). Clean failures, nothing loaded; then a normal run loads once."""
    load(pg_url, extracts.base)
    before, first = checksums(pg_url), max_run(pg_url)
    with connected(pg_url) as engine, engine.connect() as blocker:
        blocker.execute(text("LOCK TABLE dim_date IN ACCESS EXCLUSIVE MODE"))
        blocked = etl(options_with(pg_url, "-cstatement_timeout=300"), extracts.mid, tmp_path, "timeout")
        code = blocked.wait()
        blocker.rollback()
    error = assert_clean_failure(blocked, code, "statement timeout")
    run = the_run(pg_url, first)
    assert run is not None and run["status"] == "failed" and "statement timeout" in run["message"], run
    assert checksums(pg_url) == before
    cases = [(blocked, code, error, run, "statement_timeout=300ms, a statement of the load blocked")]

    first = max_run(pg_url)
    tiny = etl(options_with(pg_url, "-cstatement_timeout=1"), extracts.mid, tmp_path, "tiny-timeout")
    code = tiny.wait()
    error = assert_clean_failure(tiny, code, "statement timeout")
    run = the_run(pg_url, first)
    # 'running' when the timeout also cancelled the ledger's own "failed" update: the next run closes it
    assert run is None or run["status"] in ("failed", "running"), run
    assert checksums(pg_url) == before
    rerun = rerun_exactly_once(pg_url, extracts.mid)
    if run is not None:
        run = next(r for r in ledger(pg_url) if r["run_id"] == run["run_id"])
        assert run["status"] == "failed", run
    cases.append((tiny, code, error, run, "statement_timeout=1ms"))
    for proc, code, error, run, fault in cases:
        finish("postgresql", fault, proc, code, error, True, run, rerun)


# -- SQLite: another process holds or writes the file --------------------------------------------

_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""

_WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("CREATE TABLE IF NOT EXISTS other_app (n INTEGER)")
print("writing", flush=True)
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO other_app VALUES (1)")
    conn.execute("COMMIT")
    time.sleep(0.01)
"""


def other_process(script: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() in ("locked", "writing")
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=10)


def load_beside(url: str, script: str, script_args: tuple[str, ...], source: Path, tmp_path: Path, tag: str):
    """Run the ETL of `source` while another process runs `script` on the SQLite file; the ETL
    must succeed and load every line once. Returns the ETL process, its exit code and its run."""
    first = max_run(url)
    other = other_process(script, make_url(url).database, *script_args)
    try:
        proc = etl(url, source, tmp_path, tag)
        code = proc.wait()
    finally:
        stop(other)
    assert code == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    run = the_run(url, first)
    assert run is not None and run["status"] == "success", run
    assert_accounted(run)
    integrity = line_integrity(url)
    assert integrity["duplicate_facts"] == integrity["fact_and_quarantined"] == 0
    return proc, code, run


def test_sqlite_file_locked_by_another_process(sqlite_url: str, extracts: Extracts, tmp_path: Path) -> None:
    """Another process holds the file's write lock. Longer than the busy timeout (1 s here): clean
    failure, nothing loaded. For 2 s, within the default busy timeout: the run waits, then loads once."""
    load(sqlite_url, extracts.base)
    before, first = checksums(sqlite_url), max_run(sqlite_url)
    holder = other_process(_HOLDER, make_url(sqlite_url).database, "60")
    try:
        proc = etl(sqlite_url, extracts.mid, tmp_path, "locked", {"RDP_DATABASE__SQLITE_BUSY_TIMEOUT_S": "1"})
        code = proc.wait()
    finally:
        stop(holder)
    error = assert_clean_failure(proc, code, "database is locked", "another process holds the SQLite file")
    run = the_run(sqlite_url, first)
    assert run is None or run["status"] == "failed", run
    assert checksums(sqlite_url) == before

    waits, waited, rerun = load_beside(sqlite_url, _HOLDER, ("2",), extracts.mid, tmp_path, "waits")
    assert rerun["rows_loaded"] > 0, rerun
    assert not [r for r in ledger(sqlite_url) if r["status"] == "running"]
    finish("sqlite", "file locked by another process (busy timeout 1 s)", proc, code, error, True, run, rerun)
    RESULTS.append({"backend": "sqlite", "fault": "file locked for 2 s (within the busy timeout)", "exit": waited,
                    "error": "-", "unchanged": "-", "ledger": f"run {rerun['run_id']} success",
                    "rerun": f"(the run itself) loaded {rerun['rows_loaded']:,}", "seconds": round(waits.elapsed, 2)})  # fmt: skip


def test_sqlite_another_process_writing_during_the_load(sqlite_url: str, extracts: Extracts, tmp_path: Path) -> None:
    """Another application commits to the same file every 10 ms during the load: the run waits
    for its turn and loads the extract once (it must not fail on a changed snapshot)."""
    load(sqlite_url, extracts.base)
    proc, code, run = load_beside(sqlite_url, _WRITER, (), extracts.mid, tmp_path, "contended")
    RESULTS.append({"backend": "sqlite", "fault": "another process writing every 10 ms", "exit": code, "error": "-",
                    "unchanged": "-", "ledger": f"run {run['run_id']} success", "rerun": f"(the run itself) loaded {run['rows_loaded']:,}",
                    "seconds": round(proc.elapsed, 2)})  # fmt: skip
