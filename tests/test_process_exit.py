"""`python main.py` ends without the interpreter's teardown (main.run_and_exit): what it printed,
logged and wrote must all be there, with the exit status the command chose."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from main import _exit_status

ROOT = Path(__file__).resolve().parent.parent


def _main(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A generated extract loaded into a new SQLite warehouse by a real process."""
    work = tmp_path_factory.mktemp("exit")
    env = os.environ | {"RDP_DATABASE__URL": f"sqlite:///{work / 'w.db'}", "RDP_CACHE__DISK_PATH": str(work / "cache"),
                        "RDP_LOGGING__FILE": str(work / "log.jsonl"), "RDP_SCHEDULER__PID_FILE": str(work / "pid")}  # fmt: skip
    assert _main(["data", "generate", "--rows", "3000", "--output", str(work / "s.csv")], env).returncode == 0
    run = _main(["etl", "--source", str(work / "s.csv"), "--format", "json"], env)
    return work, env, run


def test_a_load_prints_logs_and_commits_everything_before_the_process_ends(loaded):
    work, _, run = loaded
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["status"] == "success" and summary["rows_read"] == 3000
    assert sorted(p.name for p in work.glob("w.db*")) == ["w.db"]  # its connections closed: no journal or WAL left
    conn = sqlite3.connect(work / "w.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT COUNT(*) FROM fact_sales").fetchone()[0] == summary["rows_loaded"]
    finally:
        conn.close()
    last = json.loads((work / "log.jsonl").read_text().splitlines()[-1])
    assert f"run {summary['run_id']} success" in last["message"]


def test_a_large_answer_reaches_a_pipe_whole(loaded):
    _, env, _ = loaded
    answer = _main(["query", "SELECT sales_key, quantity FROM fact_sales ORDER BY sales_key", "--no-cache", "--format", "json"], env)
    assert answer.returncode == 0, answer.stderr
    result = json.loads(answer.stdout)
    assert result["row_count"] == len(result["rows"]) > 2000
    assert [r["sales_key"] for r in result["rows"]] == list(range(1, len(result["rows"]) + 1))


def test_exit_statuses_are_the_commands_own(loaded, tmp_path):
    _, env, _ = loaded
    assert _main(["--version"], env).returncode == 0
    missing = _main(["etl", "--source", str(tmp_path / "nope.csv")], env)
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith(f"Error: {tmp_path / 'nope.csv'}: file not found; check the --source path")
    usage = _main(["etl"], env)
    assert usage.returncode == 2 and "Missing option '--source'" in usage.stderr


def test_a_reader_that_goes_away_early_ends_the_command_quietly(loaded):
    _, env, _ = loaded
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--help"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # like `| head -0`
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err == b""  # click's status for a closed pipe, and no "Exception ignored" at exit


@pytest.mark.parametrize(("code", "status", "printed"), [(None, 0, ""), (0, 0, ""), (3, 3, ""), ("stopped", 1, "stopped\n")])
def test_exit_status_follows_sys_exit(code, status, printed, capsys):
    assert _exit_status(code) == status
    assert capsys.readouterr().err == printed


def test_a_profiler_still_gets_to_write_its_results(tmp_path):
    out = tmp_path / "main.prof"
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), str(ROOT / "main.py"), "--version"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
