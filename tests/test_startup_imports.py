"""Cheap commands must not load the ETL's libraries (issue #21): help screens, --version,
config, schedule definitions and listings, and answers served from the query cache; nor
pydantic, once a command with the same settings has validated them.

Each command runs in a subprocess that reports, at exit, which heavy modules were imported (and
whether SQLAlchemy's ORM was: the warehouse's tables are Core tables, so no command, a load
included, needs it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "pyarrow", "numpy", "pydantic")  # pydantic: only when the settings' layers changed (config/snapshot.py)
ORM = "sqlalchemy.orm"  # never needed: the tables are Core tables, and a cached answer needs only the aggregates' names and SQL
PROBE = (
    "import atexit, json, runpy, sys\n"
    "atexit.register(lambda: sys.__stderr__.write('MODULES=' + json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy} or m == {orm!r})) + '\\n'))\n"
    "sys.argv = ['main.py', *sys.argv[1:]]\n"
    "runpy.run_path({main!r}, run_name='__main__')\n"
)
GROUPS = ("config", "schedule", "query", "report", "performance", "versions", "metadata", "docs", "quality", "quarantine", "alerts",
          "runs", "data", "setup", "test", "etl")  # fmt: skip


def loaded(args: list[str], env: dict[str, str]) -> list[str]:
    code = PROBE.format(heavy=set(HEAVY), orm=ORM, main=str(ROOT / "main.py"))
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    line = [x for x in proc.stderr.splitlines() if x.startswith("MODULES=")]
    assert line, proc.stderr
    return json.loads(line[-1].removeprefix("MODULES="))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """A small SQLite warehouse with one load, and its cache filled by one query and one report."""
    work = tmp_path_factory.mktemp("startup")
    env = os.environ | {"RDP_DATABASE__URL": f"sqlite:///{work / 'w.db'}", "RDP_CACHE__DISK_PATH": str(work / "cache"),
                        "RDP_LOGGING__FILE": str(work / "log.jsonl"), "RDP_SCHEDULER__PID_FILE": str(work / "pid"),
                        "RDP_SETTINGS_CACHE": str(work / "settings")}  # fmt: skip
    main = [sys.executable, str(ROOT / "main.py")]
    subprocess.run([*main, "data", "generate", "--rows", "2000", "--output", str(work / "s.csv")], env=env, check=True, capture_output=True)
    subprocess.run([*main, "etl", "--source", str(work / "s.csv")], env=env, check=True, capture_output=True)
    for args in (["query", "--named", "revenue_by_month"], ["report", "sales"]):
        subprocess.run([*main, *args], env=env, check=True, capture_output=True)
    return env


@pytest.mark.parametrize("args", [["--help"], ["--version"], *([g, "--help"] for g in GROUPS), ["schedule", "daily", "--help"]])
def test_help_and_version_load_no_dataframe_library(args):
    assert loaded(args, dict(os.environ)) == []


@pytest.mark.parametrize(
    "args",
    [["config", "show"], ["schedule", "list"], ["schedule", "status"], ["query", "--named", "revenue_by_month"],
     ["query", "--named", "revenue_by_month", "--format", "json"], ["report", "sales"], ["performance", "cache-stats"]],
)  # fmt: skip
def test_cheap_commands_load_no_dataframe_library(args, warehouse):
    assert loaded(args, warehouse) == []


@pytest.mark.parametrize(
    "args",
    [["query", "--named", "revenue_by_month"], ["query", "--named", "revenue_by_month", "--format", "json"], ["report", "sales"],
     ["report", "sales", "--format", "json"]],
)  # fmt: skip
def test_cached_answers_load_no_orm(args, warehouse):
    """Answered from the cache: the aggregates' table names and SQL come from database.aggregate_sql, not the tables."""
    assert loaded(args, warehouse) == []


def test_etl_run_loads_no_orm(tmp_path):
    """A load (set-up of a new warehouse included) uses the warehouse's Core tables only, never SQLAlchemy's ORM."""
    env = os.environ | {"RDP_DATABASE__URL": f"sqlite:///{tmp_path / 'w.db'}", "RDP_CACHE__DISK_PATH": str(tmp_path / "cache"),
                        "RDP_LOGGING__FILE": str(tmp_path / "log.jsonl"), "RDP_SCHEDULER__PID_FILE": str(tmp_path / "pid"),
                        "RDP_SETTINGS_CACHE": str(tmp_path / "settings")}  # fmt: skip
    source = tmp_path / "s.csv"
    generate = [sys.executable, str(ROOT / "main.py"), "data", "generate", "--rows", "2000", "--output", str(source)]
    subprocess.run(generate, env=env, check=True, capture_output=True)
    modules = loaded(["etl", "--source", str(source), "--format", "json"], env)
    assert "pandas" in modules  # the probe saw the load itself
    assert ORM not in modules
