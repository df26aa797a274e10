"""Fixtures of the query-cache tests: a private disk cache per test, a real Redis, and running
`main.py` in separate processes.

Redis tests skip when 127.0.0.1:6379 (RDP_TEST_REDIS_URL) is unreachable, unless
RDP_REQUIRE_REDIS=1 makes that a failure (as RDP_REQUIRE_POSTGRES does for PostgreSQL).

The cache is configured through RDP_CACHE__* variables, the `cache` section of the settings.
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

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("RDP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def disk_cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
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
def redis_cache_env(redis_available: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
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


def main_command(*args: str) -> list[str]:
    """argv of `python main.py ARGS` in a child process."""
    return [sys.executable, str(ROOT / "main.py"), *args]


def run_main(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `python main.py ARGS` in a new process with the test's environment plus `env`."""
    full = {**os.environ, **env}
    return subprocess.run(main_command(*args), capture_output=True, text=True, env=full, cwd=ROOT, timeout=120)


def query_json(url: str, *args: str, env: dict[str, str]) -> dict:
    """`query ... --format json` in a new process; the parsed answer."""
    done = run_main("--database-url", url, "query", *args, "--format", "json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
