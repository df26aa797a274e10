"""Scheduler jobs, history, incoming folders, retries and catch-up, in process, on real warehouses.

The daemon as a real subprocess (SIGTERM, SIGKILL, two daemons) is in test_scheduler_daemon.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from config.settings import load_settings
from database.engine import make_engine
from database.locks import warehouse_lock
from database.schema import ensure_schema
from scheduling import definitions, incoming, jobs
from scheduling.daemon import Daemon
from scheduling.definitions import JobDef
from scheduling.runner import JobRunner
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import one, q

H = "2011-03-01 10:00:00"


def rows(invoice: int, n: int = 3) -> list[list[str]]:
    """`n` valid sales lines of one invoice (distinct per invoice number)."""
    return [[str(invoice), f"2{i:04d}", f"ITEM {i}", "2", H, "1.50", "12345", "United Kingdom"] for i in range(n)]


def drop(folder: Path, name: str, invoice: int, n: int = 3, age_s: float = 60) -> Path:
    """A finished extract in `folder`, last modified `age_s` ago (settled)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_csv(folder / name, rows(invoice, n))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def run_json(cli: Cli, name: str, env: dict[str, str] | None = None) -> tuple[int, dict]:
    result = cli("schedule", "run", name, "--format", "json", env=env)
    return result.exit_code, json.loads(result.stdout)


def wait_for(predicate: Callable[[], object], timeout: float = 20, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


# --- definitions -------------------------------------------------------------------------------


def test_define_list_enable_disable_remove(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    assert run_cli("schedule", "daily", "--name", "nightly", "--time", "2:00", "--source", str(tmp_path / "in")).exit_code == 0
    assert run_cli("schedule", "weekly", "--name", "weekly-quality", "--day", "Mon", "--time", "06:30", "--kind", "quality").exit_code == 0
    made = run_cli("schedule", "every", "--name", "poll", "--minutes", "5", "--source", "in/*.csv", "--disabled", "--format", "json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["source"] == str(Path.cwd() / "in/*.csv")  # stored absolute
    listed = {r["name"]: r for r in json.loads(run_cli("schedule", "list", "--format", "json").stdout)}
    assert listed["nightly"]["schedule"] == "daily at 02:00" and listed["nightly"]["kind"] == "etl"
    assert listed["nightly"]["next_run_at"] is not None
    assert listed["weekly-quality"]["schedule"] == "weekly on monday at 06:30" and listed["weekly-quality"]["source"] is None
    assert listed["poll"]["schedule"] == "every 5 min" and listed["poll"]["enabled"] is False and listed["poll"]["next_run_at"] is None

    assert run_cli("schedule", "enable", "poll").exit_code == 0
    assert run_cli("schedule", "disable", "nightly").exit_code == 0
    assert one(warehouse_url, "SELECT enabled FROM scheduled_jobs WHERE name = 'poll'") in (True, 1)
    assert one(warehouse_url, "SELECT next_run_at FROM scheduled_jobs WHERE name = 'nightly'") is None
    assert run_cli("schedule", "remove", "weekly-quality").exit_code == 0
    assert sorted(r[0] for r in q(warehouse_url, "SELECT name FROM scheduled_jobs")) == ["nightly", "poll"]
    replaced = run_cli("schedule", "every", "--name", "poll", "--seconds", "30", "--source", "in", "--replace")
    assert replaced.exit_code == 0 and "every 30 s" in replaced.output
    assert json.loads(run_cli("schedule", "history", "--format", "json").stdout) == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["daily", "--name", "x", "--time", "25:00", "--source", "a"], 2, "'25:00' is not a time of day; use HH:MM"),
        (["daily", "--name", "x", "--time", "2pm", "--source", "a"], 2, "'2pm' is not a time of day"),
        (["weekly", "--name", "x", "--day", "funday", "--time", "02:00", "--source", "a"], 2, "'funday' is not a day of the week"),
        (["daily", "--name", "bad name", "--time", "02:00", "--source", "a"], 2, "'bad name' is not a valid job name"),
        (["every", "--name", "x", "--source", "a"], 2, "give exactly one of --minutes N or --seconds N"),
        (["every", "--name", "x", "--minutes", "1", "--seconds", "5", "--source", "a"], 2, "give exactly one of --minutes"),
        (["daily", "--name", "x", "--time", "02:00"], 2, "give --source PATH_OR_GLOB for a load job, or --kind"),
        (["daily", "--name", "x", "--time", "02:00", "--kind", "etl"], 2, "an etl job needs --source"),
        (["daily", "--name", "x", "--time", "02:00", "--kind", "alerts", "--source", "a"], 2, "apply to etl jobs only"),
        (["remove", "nightli"], 1, "no job named 'nightli' (did you mean 'nightly'?); see python main.py schedule list"),
        (["enable", "nope"], 1, "no job named 'nope'"),
        (["run", "nope"], 1, "no job named 'nope'"),
        (["daily", "--name", "nightly", "--time", "03:00", "--source", "b"], 1, "a job named 'nightly' already exists"),
    ],
)
def test_bad_definitions_give_clear_errors(sqlite_cli: Cli, args: list[str], code: int, message: str) -> None:
    assert sqlite_cli("schedule", "daily", "--name", "nightly", "--time", "02:00", "--source", "in").exit_code == 0
    result = sqlite_cli("schedule", *args)
    assert result.exit_code == code, result.output
    assert message in " ".join(result.output.split())


def test_parsing_and_schedule_words() -> None:
    assert definitions.parse_time("2:05") == "02:05" and definitions.parse_time("23:59") == "23:59"
    assert definitions.parse_day("SUN") == "sunday" and definitions.parse_day("thurs") == "thursday"
    for bad in ("24:00", "12:60", "", "1200"):
        with pytest.raises(ValueError, match="HH:MM"):
            definitions.parse_time(bad)
    with pytest.raises(ValueError, match="not a day"):
        definitions.parse_day("t")  # tue or thu?
    assert JobDef("a", "etl", "every", interval_s=90).describe() == "every 90 s"
    local_next = jobs.next_run_local(JobDef("a", "etl", "weekly", weekday="friday", at_time="06:00"))
    assert local_next.weekday() == 4 and (local_next.hour, local_next.minute) == (6, 0)


# --- incoming folders ---------------------------------------------------------------------------------


def test_folder_job_loads_each_new_file_once_in_name_order(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    inbox, archive = tmp_path / "in", tmp_path / "archive"
    drop(inbox, "b_day2.csv", 2)
    drop(inbox, "a_day1.csv", 1)
    (inbox / "notes.txt").write_text("not an extract")  # a folder job takes *.csv, *.csv.gz, *.csv.bz2 only
    (inbox / ".c_day3.csv.part").write_text("half")  # hidden / temporary names are never taken
    run_cli("schedule", "every", "--name", "drop", "--minutes", "1", "--source", str(inbox), "--archive-dir", str(archive))

    code, first = run_json(run_cli, "drop")
    assert code == 0 and first["status"] == "success" and first["files_loaded"] == 2
    assert first["message"].index("a_day1.csv") < first["message"].index("b_day2.csv")
    assert q(warehouse_url, "SELECT run_id, source FROM etl_runs ORDER BY run_id") == [
        (1, str(archive.parent / "in" / "a_day1.csv")),
        (2, str(archive.parent / "in" / "b_day2.csv")),
    ]
    assert sorted(p.name for p in archive.iterdir()) == ["a_day1.csv", "b_day2.csv"]

    drop(inbox, "c_day3.csv", 3)
    write_csv(inbox / "d_copy_of_day1.csv", rows(1))  # same bytes as a_day1.csv: already loaded
    os.utime(inbox / "d_copy_of_day1.csv", (time.time() - 60, time.time() - 60))
    code, second = run_json(run_cli, "drop")
    assert code == 0 and second["files_loaded"] == 1 and second["etl_run_ids"] == [3]
    assert "1 file(s) already loaded (same SHA-256): d_copy_of_day1.csv" in second["message"]
    _, third = run_json(run_cli, "drop")
    assert third["status"] == "skipped" and third["message"] == "no CSV files in " + str(inbox)

    assert one(warehouse_url, "SELECT COUNT(*) FROM fact_sales") == 9
    assert one(warehouse_url, "SELECT COUNT(*) FROM etl_runs WHERE status = 'success'") == 3
    history = q(warehouse_url, "SELECT status, trigger, attempt, files_loaded, etl_run_ids FROM job_runs ORDER BY job_run_id")
    assert history == [("success", "manual", 1, 2, "1,2"), ("success", "manual", 1, 1, "3"), ("skipped", "manual", 1, 0, None)]
    assert q(warehouse_url, "SELECT last_status FROM scheduled_jobs") == [("skipped",)]


def test_file_still_being_written_waits_for_the_next_run(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    fresh = drop(tmp_path / "in", "today.csv", 7, age_s=0)
    sqlite_cli("schedule", "daily", "--name", "nightly", "--time", "02:00", "--source", str(tmp_path / "in" / "*.csv"))
    env = {"RDP_SCHEDULER__SETTLE_SECONDS": "30"}
    _, waiting = run_json(sqlite_cli, "nightly", env)
    assert waiting["status"] == "skipped" and "1 file(s) still being written, left for the next run: today.csv" in waiting["message"]
    os.utime(fresh, (time.time() - 31, time.time() - 31))
    _, loaded = run_json(sqlite_cli, "nightly", env)
    assert loaded["status"] == "success" and loaded["files_loaded"] == 1


def test_bad_file_fails_terminally_without_retry_and_others_still_load(
    sqlite_cli: Cli, sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "in"
    drop(inbox, "a_good.csv", 1)
    bad = inbox / "b_bad.csv"
    bad.write_text("Invoice,Stock\n1,2\n")
    os.utime(bad, (time.time() - 60, time.time() - 60))
    drop(inbox, "c_good.csv", 3)
    sqlite_cli("schedule", "daily", "--name", "nightly", "--time", "02:00", "--source", str(inbox))
    result = sqlite_cli("schedule", "run", "nightly", "--format", "json", env={"RDP_SCHEDULER__RETRY_BACKOFF_S": "0"})
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["status"] == "failed" and report["attempts"] == 1 and report["files_loaded"] == 2
    assert "failed: b_bad.csv: " in report["message"] and "required column(s)" in report["message"]
    assert "Error: job 'nightly' failed: " in result.stderr
    assert any("ALERT scheduled job 'nightly' failed" in r.getMessage() for r in caplog.records)
    assert q(sqlite_url, "SELECT status, attempt FROM job_runs") == [("failed", 1)]


def test_runner_remembers_a_bad_file_until_it_changes(sqlite_url: str, tmp_path: Path) -> None:
    settings = load_settings(overrides={"database": {"url": sqlite_url}, "scheduler": {"settle_seconds": 0}}, default_files=())
    engine = make_engine(settings.database)
    ensure_schema(engine)
    bad = tmp_path / "in" / "x.csv"
    bad.parent.mkdir()
    bad.write_text("")
    runner = JobRunner(engine, settings)
    job = JobDef("inbox", "etl", "every", source=str(bad.parent), interval_s=60)
    assert runner.run(job).status == "failed"
    again = runner.run(job)
    assert again.status == "skipped" and "1 file(s) failed before and are unchanged, not retried: x.csv" in again.message
    write_csv(bad, rows(5))  # fixed: new content, new attempt
    assert runner.run(job).status == "success"
    engine.dispose()


def test_checksum_cache_follows_changes(tmp_path: Path) -> None:
    path = drop(tmp_path, "a.csv", 1)
    cache = incoming.ChecksumCache()
    first = cache.checksum(path)
    assert cache.checksum(path) == first
    write_csv(path, rows(2))
    assert cache.checksum(path) != first
    cache.keep_only([])
    assert cache._known == {}


# --- overlap, retries, optional kinds -----------------------------------------------------------------------


def test_job_never_overlaps_itself(run_cli: Cli, warehouse_url: str, tmp_path: Path) -> None:
    drop(tmp_path / "in", "a.csv", 1)
    run_cli("schedule", "daily", "--name", "nightly", "--time", "02:00", "--source", str(tmp_path / "in"))
    settings = load_settings(overrides={"database": {"url": warehouse_url}}, default_files=())
    engine = make_engine(settings.database)
    lock_id = JobRunner(engine, settings).job_lock_id("nightly")
    with warehouse_lock(engine, 1, lock_id=lock_id):  # "another machine" is running the job
        code, report = run_json(run_cli, "nightly")
    engine.dispose()
    assert code == 0 and report["status"] == "skipped"
    assert "job 'nightly' is already running in another process or on another machine; this run was skipped" in report["message"]
    assert one(warehouse_url, "SELECT COUNT(*) FROM etl_runs") == 0
    _, report = run_json(run_cli, "nightly")
    assert report["status"] == "success"


def test_retry_until_a_locked_sqlite_warehouse_is_free(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    drop(tmp_path / "in", "a.csv", 1)
    sqlite_cli("schedule", "daily", "--name", "nightly", "--time", "02:00", "--source", str(tmp_path / "in"))
    holder = sqlite3.connect(make_url(sqlite_url).database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing for 1.5 s
    release = threading.Timer(1.5, holder.execute, ("COMMIT",))
    release.start()
    env = {"RDP_DATABASE__SQLITE_BUSY_TIMEOUT_S": "0.1", "RDP_SCHEDULER__RETRY_BACKOFF_S": "0.2", "RDP_SCHEDULER__MAX_RETRIES": "6"}
    try:
        code, report = run_json(sqlite_cli, "nightly", env)
    finally:
        release.join()
        holder.close()
    assert code == 0 and report["status"] == "success" and report["attempts"] >= 3, report
    assert q(sqlite_url, "SELECT status, attempt FROM job_runs") == [("success", report["attempts"])]
    assert one(sqlite_url, "SELECT COUNT(*) FROM fact_sales") == 3


def test_retry_stops_at_max_retries(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path) -> None:
    drop(tmp_path / "in", "a.csv", 1)
    sqlite_cli("schedule", "daily", "--name", "nightly", "--time", "02:00", "--source", str(tmp_path / "in"))
    holder = sqlite3.connect(make_url(sqlite_url).database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    env = {"RDP_DATABASE__SQLITE_BUSY_TIMEOUT_S": "0", "RDP_SCHEDULER__RETRY_BACKOFF_S": "0.05", "RDP_SCHEDULER__MAX_RETRIES": "2"}
    try:
        result = sqlite_cli("schedule", "run", "nightly", "--format", "json", env=env)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and report["status"] == "failed" and report["attempts"] == 3
    assert "database is locked" in report["message"]


class FlakyProxy:
    """A TCP proxy to PostgreSQL that drops every connection until `up()` (a server coming back)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def up(self) -> None:
        self.forwarding.set()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.forwarding.is_set():
                self.refused += 1
                client.close()
                continue
            server = socket.create_connection(self.target)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):  # either side closed: end both
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def test_retry_until_postgresql_comes_back(pg_url: str, tmp_path: Path) -> None:
    direct = make_url(pg_url)
    proxy = FlakyProxy((direct.host or "127.0.0.1", direct.port or 5432))
    via_proxy = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    settings = load_settings(
        overrides={"database": {"url": via_proxy}, "scheduler": {"retry_backoff_s": 0.2, "max_retries": 6, "settle_seconds": 0}},
        default_files=(),
    )
    setup = make_engine(replace(settings.database, url=pg_url))
    ensure_schema(setup)
    drop(tmp_path / "in", "a.csv", 1)
    engine = make_engine(settings.database)
    threading.Timer(1.2, proxy.up).start()  # the server is unreachable for 1.2 s
    try:
        report = JobRunner(engine, settings).run(JobDef("nightly", "etl", "daily", source=str(tmp_path / "in"), at_time="02:00"))
    finally:
        engine.dispose()
        setup.dispose()
        proxy.close()
    assert proxy.refused >= 2
    assert report.status == "success" and report.attempts >= 3 and report.files_loaded == 1, report
    assert q(pg_url, "SELECT status, attempt FROM job_runs") == [("success", report.attempts)]
    assert one(pg_url, "SELECT COUNT(*) FROM fact_sales") == 3


@pytest.mark.parametrize("kind", ["quality", "alerts"])
def test_quality_and_alert_jobs_run_or_say_why_not(sqlite_cli: Cli, sqlite_url: str, tmp_path: Path, kind: str) -> None:
    from scheduling.kinds import OPTIONAL_KINDS

    try:
        present = importlib.util.find_spec(OPTIONAL_KINDS[kind][0]) is not None
    except ModuleNotFoundError:
        present = False
    sqlite_cli("etl", "--source", str(drop(tmp_path, "a.csv", 1)))
    sqlite_cli("schedule", "weekly", "--name", "k", "--day", "sun", "--time", "05:00", "--kind", kind)
    result = sqlite_cli("schedule", "run", "k", "--format", "json", env={"RDP_SCHEDULER__RETRY_BACKOFF_S": "0"})
    report = json.loads(result.stdout)
    assert report["attempts"] == 1  # never retried: success, or a terminal failure
    if not present:
        assert result.exit_code == 1 and f"job kind '{kind}' is not available" in report["message"]
    elif report["status"] == "failed":
        assert kind == "quality" and "quality gate failed: blocking check(s)" in report["message"]
    else:
        assert report["status"] == "success" and report["message"].startswith(f"{kind}: ")
    assert q(sqlite_url, "SELECT kind, status, attempt FROM job_runs") == [(kind, report["status"], 1)]


# --- daemon in process: catch-up and stop -------------------------------------------------------------------


@pytest.fixture
def stop_when() -> Iterator[Callable[[Callable[[], object]], None]]:
    """Send this process SIGTERM once `predicate` holds (the daemon under test has its handler installed by then)."""
    threads: list[threading.Thread] = []

    def arm(predicate: Callable[[], object]) -> None:
        def watch() -> None:
            wait_for(predicate, timeout=30)
            os.kill(os.getpid(), signal.SIGTERM)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        threads.append(thread)

    yield arm
    for thread in threads:
        thread.join(timeout=35)


@pytest.mark.parametrize("policy", ["once", "skip"])
def test_missed_run_is_caught_up_once_at_start(
    sqlite_url: str, tmp_path: Path, policy: str, stop_when: Callable[[Callable[[], object]], None]
) -> None:
    drop(tmp_path / "in", "a.csv", 1)
    settings = load_settings(
        overrides={"database": {"url": sqlite_url}, "scheduler": {"catch_up": policy, "settle_seconds": 0}}, default_files=()
    )
    engine = make_engine(settings.database)
    ensure_schema(engine)
    jobs.add_job(engine, JobDef("nightly", "etl", "daily", source=str(tmp_path / "in"), at_time="02:00"))
    with engine.begin() as conn:  # the daemon was down at the last 02:00 (and the one before)
        conn.exec_driver_sql("UPDATE scheduled_jobs SET next_run_at = '2020-01-02 02:00:00'")
    stop_when(lambda: q(sqlite_url, "SELECT 1 FROM job_runs WHERE finished_at IS NOT NULL"))
    assert Daemon(engine, settings, tmp_path / "s.pid").run() == 0
    runs = q(sqlite_url, "SELECT trigger, status, message FROM job_runs")
    if policy == "once":
        assert [r[:2] for r in runs] == [("catch_up", "success")]
    else:
        assert runs == [
            (
                "catch_up",
                "skipped",
                "missed the run due at 2020-01-02 02:00:00 UTC while the scheduler was down; not run (scheduler.catch_up = skip)",
            )
        ]
    next_run = one(sqlite_url, "SELECT next_run_at FROM scheduled_jobs")
    assert str(next_run) > "2020-01-02"  # rescheduled into the future
    assert not (tmp_path / "s.pid").exists()
    engine.dispose()


def test_stop_and_status_without_a_daemon(sqlite_cli: Cli, tmp_path: Path) -> None:
    env = {"RDP_SCHEDULER__PID_FILE": str(tmp_path / "s.pid")}
    stopped = sqlite_cli("schedule", "stop", env=env)
    assert stopped.exit_code == 1 and "the scheduler is not running" in stopped.output
    status = json.loads(sqlite_cli("schedule", "status", "--format", "json", env=env).stdout)
    assert status["running"] is False and status["pid"] is None and status["jobs"] == []
    (tmp_path / "s.pid").write_text("999999\n")  # left by a killed daemon: not locked, so not running
    assert json.loads(sqlite_cli("schedule", "status", "--format", "json", env=env).stdout)["running"] is False
