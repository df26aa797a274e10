"""Shared fixtures: real SQLite files, a real PostgreSQL schema per test, the CLI runner.

PostgreSQL and the shared real dataset are skipped when absent, unless RDP_REQUIRE_POSTGRES=1
or RDP_REQUIRE_DATASET=1 (set by .ci/run) make their absence a failure.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from utils.vocabulary import SOURCE_COLUMNS

ROOT = Path(__file__).resolve().parent.parent
REAL_FILE = Path(os.environ.get("RDP_REAL_DATASET", ROOT.parent / "shared" / "datasets" / "online_retail.csv"))
PG_URL = os.environ.get("RDP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/rdp_test")


def _required(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0", "false")


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure to connect means: no PostgreSQL here
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_available() -> None:
    problem = _pg_reachable()
    if problem:
        if _required("RDP_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required (RDP_REQUIRE_POSTGRES=1) but {PG_URL} is unreachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {problem}")


@pytest.fixture(scope="session")
def real_file() -> Path:
    if not REAL_FILE.exists():
        if _required("RDP_REQUIRE_DATASET"):
            pytest.fail(f"real dataset required (RDP_REQUIRE_DATASET=1) but {REAL_FILE} is missing")
        pytest.skip(f"real dataset not found at {REAL_FILE}")
    return REAL_FILE


CHROMIUM = Path(os.environ.get("RDP_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("RDP_CHROMEDRIVER", "/usr/bin/chromedriver"))


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """(browser, driver) of the system's headless Chromium for browser tests; skipped when either
    or selenium is missing, unless RDP_REQUIRE_BROWSER=1 makes that a failure."""
    problems = [f"{p} is missing" for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        problems.append("the selenium package is not installed")
    if problems:
        if _required("RDP_REQUIRE_BROWSER"):
            pytest.fail(f"a browser is required (RDP_REQUIRE_BROWSER=1) but {'; '.join(problems)}")
        pytest.skip(f"no browser for this test: {'; '.join(problems)}")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'warehouse.db'}"


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """A fresh PostgreSQL schema for one test, as a URL whose search_path points at it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"))
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    yield url.render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses it runs on a real SQLite file and on a real PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No developer settings leak in; logs go to the test's folder."""
    for name in list(os.environ):
        if name.startswith("RDP_") and name not in (
            "RDP_REQUIRE_POSTGRES",
            "RDP_REQUIRE_DATASET",
            "RDP_REQUIRE_REDIS",
            "RDP_REQUIRE_BROWSER",
            "RDP_TEST_REDIS_URL",
            "RDP_TEST_POSTGRES_URL",
            "RDP_REAL_DATASET",
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RDP_LOGGING__FILE", str(tmp_path / "logs" / "rdp.log"))
    monkeypatch.setenv("RDP_CACHE__DISK_PATH", str(tmp_path / "cache"))
    # Small hand-made extracts would trip the quality gate (one bad row in four is 75%
    # accuracy); tests of the gate itself, and the real-file tests, set it back to "fail".
    monkeypatch.setenv("RDP_QUALITY_RULES__ON_FAILURE", "warn")


class Cli:
    """Runs `main.py` commands in-process against one warehouse."""

    def __init__(self, url: str | None) -> None:
        self.url = url

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        from main import cli

        base = ["--database-url", self.url] if self.url else []
        return CliRunner().invoke(cli, [*base, *args], env=env, catch_exceptions=False)


@pytest.fixture
def run_cli(warehouse_url: str) -> Cli:
    return Cli(warehouse_url)


@pytest.fixture
def sqlite_cli(sqlite_url: str) -> Cli:
    return Cli(sqlite_url)


def write_csv(path: Path, rows: list[list[str]], header: list[str] | None = None, encoding: str = "utf-8") -> Path:
    """Write a small extract in the UCI layout."""
    with open(path, "w", newline="", encoding=encoding) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header or list(SOURCE_COLUMNS))
        writer.writerows(rows)
    return path
