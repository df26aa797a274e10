"""Fixtures of the query-cache tests: a private disk cache per test, a real Redis, and running
`main.py` in separate processes.

Redis tests skip when 127.0.0.1:6379 (RDP_TEST_REDIS_URL) is unreachable, unless
RDP_REQUIRE_REDIS=1 makes that a failure (as RDP_REQUIRE_POSTGRES does for PostgreSQL).

The cache is configured through RDP_CACHE__* variables, the `cache` section of the settings.
Until config/settings.py declares that section, `ensure_cache_section` adds it to the settings
model of the process (in-process: for one test; child processes: see `main_command`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import Field

from config.cache import CacheSettings

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("RDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def ensure_cache_section() -> type | None:
    """Give Settings its `cache` section if config/settings.py does not declare it yet; returns the
    original class when it had to (so a test can put it back)."""
    from config import settings as cfg

    if "cache" in cfg.Settings.model_fields:
        return None
    original = cfg.Settings

    class SettingsWithCache(original):  # type: ignore[valid-type, misc]
        cache: CacheSettings = Field(default_factory=CacheSettings)

    SettingsWithCache.__name__ = "Settings"
    cfg.Settings = SettingsWithCache
    return original


@pytest.fixture
def cache_section() -> Iterator[None]:
    from config import settings as cfg

    original = ensure_cache_section()
    yield
    if original is not None:
        cfg.Settings = original


@pytest.fixture
def disk_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_section: None) -> dict[str, str]:
    """A disk cache of this test only."""
    env = {"RDP_CACHE__DISK_PATH": str(tmp_path / "cache"), "RDP_CACHE__BACKEND": "disk"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _redis_problem() -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        client.ping()
        client.close()
        return None
    except (redis.exceptions.RedisError, OSError) as exc:
        return str(exc)


@pytest.fixture(scope="session")
def redis_available() -> None:
    problem = _redis_problem()
    if problem:
        if os.environ.get("RDP_REQUIRE_REDIS", "") not in ("", "0", "false"):
            pytest.fail(f"Redis required (RDP_REQUIRE_REDIS=1) but {REDIS_URL} is unreachable: {problem}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {problem}")


@pytest.fixture
def redis_cache_env(redis_available: None, monkeypatch: pytest.MonkeyPatch, cache_section: None) -> Iterator[dict[str, str]]:
    """A Redis cache under a key prefix of this test only, removed afterwards."""
    import redis

    prefix = f"rdp-test-{uuid.uuid4().hex[:10]}-"  # no colon: RDP_* values are read as YAML
    env = {"RDP_CACHE__REDIS_URL": REDIS_URL, "RDP_CACHE__BACKEND": "redis", "RDP_CACHE__REDIS_PREFIX": prefix}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


_SHIM = (
    "import sys, runpy; sys.path.insert(0, {root!r}); "
    "from tests.cache_fixtures import ensure_cache_section; ensure_cache_section(); "
    "sys.argv = ['main.py'] + sys.argv[1:]; runpy.run_path({main!r}, run_name='__main__')"
)


def main_command(*args: str) -> list[str]:
    """argv of `python main.py ARGS` in a child process (with the cache section ensured)."""
    from config import settings as cfg

    if "cache" in cfg.Settings.model_fields and cfg.Settings.__module__ == "config.settings":
        return [sys.executable, str(ROOT / "main.py"), *args]
    return [sys.executable, "-c", _SHIM.format(root=str(ROOT), main=str(ROOT / "main.py")), *args]


def run_main(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `python main.py ARGS` in a new process with the test's environment plus `env`."""
    full = {**os.environ, **env}
    return subprocess.run(main_command(*args), capture_output=True, text=True, env=full, cwd=ROOT, timeout=120)


def query_json(url: str, *args: str, env: dict[str, str]) -> dict:
    """`query ... --format json` in a new process; the parsed answer."""
    done = run_main("--database-url", url, "query", *args, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
