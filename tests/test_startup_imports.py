"""Cheap commands must not load the ETL's libraries (issue #21): help screens, --version,
config, schedule definitions and listings, and answers served from the query cache; nor
pydantic, once a command with the same settings has validated them.

Each command runs in a subprocess that reports, at exit, which heavy modules were imported (and
whether SQLAlchemy's ORM was: the cached answers must not need the warehouse's models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("pandas", "pyarrow", "numpy", "pydantic")  # pydantic: only when the settings' layers changed (config/snapshot.py)
ORM = "sqlalchemy.orm"  # the warehouse's models: a cached answer needs the aggregates' names and SQL only
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
    assert [m for m in loaded(args, warehouse) if m != ORM] == []


@pytest.mark.parametrize(
    "args",
    [["query", "--named", "revenue_by_month"], ["query", "--named", "revenue_by_month", "--format", "json"], ["report", "sales"],
     ["report", "sales", "--format", "json"]],
)  # fmt: skip
def test_cached_answers_load_no_orm(args, warehouse):
    """Answered from the cache: the aggregates' table names and SQL come from database.aggregate_sql, not the models."""
    assert loaded(args, warehouse) == []
