"""The query cache: shared across processes (disk and a real Redis), bounded with LRU eviction,
TTL, statistics persisted in the store, private files, and answers without it when it is down."""

from __future__ import annotations

import json
import math
import stat
import time
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from config.cache import CacheSettings
from config.settings import DatabaseSettings
from database.engine import make_engine
from performance.cache import DecodedAnswers, DiskCache, RedisCache, decode_result, encode_result
from performance.service import QueryService
from tests.cache_fixtures import (  # noqa: F401  (fixtures)
    REDIS_URL,
    disk_cache_env,
    query_json,
    redis_available,
    redis_cache_env,
    run_main,
)
from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json
from utils.errors import ConfigError


def _stats(cli: Cli) -> dict:
    result = cli("performance", "cache-stats", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _hit_across_processes(cli: Cli, url: str, env: dict, tmp_path: Path) -> None:
    etl_json(cli, write_csv(tmp_path / "rows.csv", ROWS))
    first = query_json(url, "--named", "revenue_by_month", env=env)
    second = query_json(url, "--named", "revenue_by_month", env=env)
    assert (first["cache"], second["cache"]) == ("miss", "hit")
    assert second["rows"] == first["rows"] and second["data_version"] == first["data_version"]
    stats = _stats(cli)  # a third process's view (this one)
    assert (stats["hits"], stats["misses"], stats["stores"], stats["entries"]) == (1, 1, 1, 1)
    assert stats["hit_rate"] == 0.5 and stats["bytes"] > 0
    cleared = cli("performance", "cache-clear")
    assert cleared.exit_code == 0 and cleared.stdout.startswith("removed 1 cached answers from the ")
    after = _stats(cli)
    assert (after["hits"], after["misses"], after["entries"]) == (0, 0, 0)


def test_disk_cache_hit_across_processes(sqlite_cli: Cli, sqlite_url: str, disk_cache_env: dict, tmp_path: Path) -> None:  # noqa: F811
    _hit_across_processes(sqlite_cli, sqlite_url, disk_cache_env, tmp_path)
    folder = Path(disk_cache_env["RDP_CACHE__DISK_PATH"])
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in folder.rglob("*.db"))


def test_redis_cache_hit_across_processes(pg_url: str, redis_cache_env: dict, tmp_path: Path) -> None:  # noqa: F811
    _hit_across_processes(Cli(pg_url), pg_url, redis_cache_env, tmp_path)


def test_disk_cache_bound_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", CacheSettings(max_bytes=256 * 1024))
    try:
        for i in range(120):
            cache.put(f"k{i}", bytes(4_000))
            assert cache.get("k0") is not None  # k0 stays the most recently used
            assert cache.entries.volume() <= 256 * 1024
        stats = cache.stats()
        assert stats.evictions > 0 and stats.entries + stats.evictions == 120
        assert cache.get("k119") is not None and cache.get("k1") is None
    finally:
        cache.close()


def test_redis_cache_bound_ttl_and_stats(redis_cache_env: dict) -> None:  # noqa: F811
    settings = CacheSettings(
        backend="redis", redis_url=REDIS_URL, redis_prefix=redis_cache_env["RDP_CACHE__REDIS_PREFIX"], max_bytes=64 * 1024, ttl_seconds=1
    )
    cache = RedisCache(settings)
    try:
        for key in ("a", "b", "c"):
            cache.put(key, bytes(20_000))
        assert cache.get("a") is not None  # a is now more recent than b
        cache.put("d", bytes(20_000))  # 80,000 bytes > 65,536: the least recently used (b) goes
        assert cache.get("b") is None and cache.get("a") is not None
        stats = cache.stats()
        assert (stats.entries, stats.bytes, stats.evictions, stats.stores) == (3, 60_000, 1, 4)
        assert (stats.hits, stats.misses) == (2, 1)
        time.sleep(1.2)
        assert cache.get("a") is None
        stats = cache.stats()
        assert (stats.entries, stats.bytes, stats.expired) == (0, 0, 3)
        assert cache.clear() == 0 and cache.stats().hits == 0
    finally:
        cache.close()


def test_disk_cache_ttl(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path / "c", CacheSettings(ttl_seconds=1))
    try:
        cache.put("a", b"answer")
        assert cache.get("a") == b"answer"
        time.sleep(1.2)
        assert cache.get("a") is None
        stats = cache.stats()
        assert (stats.entries, stats.expired, stats.hits, stats.misses) == (0, 1, 1, 1)
    finally:
        cache.close()


def test_answers_keep_their_types() -> None:
    rows = [
        (1, "a", Decimal("1.500"), date(2011, 1, 2), datetime(2011, 1, 2, 8, 26), 1.25, True, None),
        (2, None, Decimal("-0.001"), None, None, 3, False, b"\x00"),
    ]
    columns = ["i", "s", "d", "day", "ts", "mixed", "b", "raw"]
    assert decode_result(encode_result(columns, rows)) == (columns, rows)
    assert decode_result(encode_result(["x"], [])) == (["x"], [])


def test_answers_keep_integers_beyond_64_bits_and_non_finite_floats() -> None:
    rows = [(2**70, float("inf"), -(2**63)), (1, -float("inf"), 2**64 - 1), (None, float("nan"), 0)]
    _, decoded = decode_result(encode_result(["big", "f", "edge"], rows))
    assert [r[0] for r in decoded] == [2**70, 1, None] and isinstance(decoded[0][0], int)
    assert decoded[0][1] == float("inf") and decoded[1][1] == -float("inf") and math.isnan(decoded[2][1])
    assert [r[2] for r in decoded] == [-(2**63), 2**64 - 1, 0]


def test_query_answers_when_the_cache_is_down(
    sqlite_cli: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    etl_json(sqlite_cli, write_csv(tmp_path / "rows.csv", ROWS))
    monkeypatch.setenv("RDP_CACHE__REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("RDP_CACHE__REDIS_TIMEOUT_S", "0.5")
    result = sqlite_cli("query", "--named", "revenue_by_month", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cache"] == "unavailable" and len(data["rows"]) == 3
    assert "Redis query cache at redis://127.0.0.1:1/0 is not reachable" in data["note"]
    stats = sqlite_cli("performance", "cache-stats")
    assert stats.exit_code == 1
    assert stats.stderr.startswith("Error: Redis query cache at redis://127.0.0.1:1/0 is not reachable (")
    assert stats.stderr.strip().endswith("); check cache.redis_url")


def test_redis_setting_needs_a_url() -> None:
    with pytest.raises(ConfigError, match=r"cache\.backend is redis but cache\.redis_url is empty"):
        CacheSettings(backend="redis").effective_backend  # noqa: B018
    assert CacheSettings(redis_url="redis://x").effective_backend == "redis"
    assert CacheSettings().effective_backend == "disk"


def test_decoded_answers_skip_decoding_not_the_store() -> None:
    decoded = DecodedAnswers(max_bytes=1_500)
    rows = [(i, Decimal(f"{i}.50"), date(2011, 1, 1 + i % 28)) for i in range(20)]
    blob = encode_result(["i", "d", "day"], rows)
    first = decoded.decode("k1", blob)
    again = decoded.decode("k1", blob)
    assert first == again == (["i", "d", "day"], rows)
    assert again[1][0] is first[1][0] and again[1] is not first[1]  # the same decoded rows, a new list to each caller
    again[1].clear()
    assert decoded.decode("k1", blob)[1] == rows  # a caller's change does not reach the next one
    other = encode_result(["i"], [(i,) for i in range(300)])
    assert len(blob) + len(other) > 1_500 >= len(other)
    decoded.decode("k2", other)  # over the bound: the least recently used answer goes
    assert decoded.decode("k1", blob)[1][0] is not first[1][0]  # decoded afresh


def test_repeated_hits_in_one_process_still_count_in_the_store(
    sqlite_url: str,
    sqlite_cli: Cli,
    tmp_path: Path,
) -> None:
    etl_json(sqlite_cli, write_csv(tmp_path / "rows.csv", ROWS))
    engine = make_engine(DatabaseSettings(url=sqlite_url))
    service = QueryService(engine, CacheSettings(disk_path=str(tmp_path / "qc")))
    try:
        answers = [service.run_named("customer_rfm") for _ in range(3)]
        assert [a.cache for a in answers] == ["miss", "hit", "hit"]
        assert answers[0].rows == answers[1].rows == answers[2].rows
        assert service.cache.stats().hits == 2 and service.cache.stats().misses == 1
        service.cache.clear()  # gone from the store: asked again, not answered from memory
        assert service.run_named("customer_rfm").cache == "miss"
    finally:
        service.close()
        engine.dispose()
