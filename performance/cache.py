"""The query cache: answers of read-only queries, shared by every process on the machine.

A CLI call is a new process, so the cache lives outside it: in a local disk cache (diskcache,
SQLite files under `cache.disk_path`) or in Redis when `cache.redis_url` is set. Both bound the
stored bytes (`cache.max_bytes`, least recently used first), drop answers after
`cache.ttl_seconds`, and keep their statistics in the store itself, so `performance
cache-stats` in another process sees every hit and miss.

Keys are SHA-256 digests of the query, its parameters, the warehouse (URL without password) and
the warehouse's data version (see `performance.service`), so an answer cached before a load,
replay or rollback is never found again. Values are JSON (never pickle): nobody who can write
to the store can make a reader run code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import shutil
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import orjson

from config.cache import CacheSettings
from utils.errors import PlatformError
from utils.files import private_dir, restrict
from utils.urls import mask_url

log = logging.getLogger(__name__)
FORMAT_VERSION = "1"  # part of every key: a change of the value format never reads old values


class CacheUnavailable(PlatformError):
    """The cache store cannot be reached (Redis down, disk folder not writable)."""


@dataclass
class CacheStats:
    """Counters since the cache was created or last cleared, and what it holds now."""

    backend: str
    location: str
    hits: int
    misses: int
    stores: int
    entries: int
    bytes: int
    max_bytes: int
    evictions: int
    expired: int
    since: str | None

    @property
    def hit_rate(self) -> float | None:
        asked = self.hits + self.misses
        return self.hits / asked if asked else None

    def as_dict(self) -> dict[str, Any]:
        rate = self.hit_rate
        return asdict(self) | {"hit_rate": None if rate is None else round(rate, 4)}


class QueryCache(Protocol):
    backend: str
    location: str

    def get(self, key: str) -> bytes | None:
        """The stored value, or None; counts a hit or a miss."""

    def put(self, key: str, value: bytes) -> None:
        """Store a value (TTL and size bound applied)."""

    def stats(self) -> CacheStats: ...

    def clear(self) -> int:
        """Remove every entry and reset the counters; returns the entries removed."""

    def close(self) -> None: ...


def cache_key(**parts: Any) -> str:
    """A stable digest of the parts (JSON with sorted keys)."""
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# disk


class _Counters:
    """Statistics of the disk cache: named integers in their own small SQLite file (kept apart from
    the entries, so eviction never touches them), incremented by every process."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
        self.lock = threading.Lock()
        with self.lock:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=OFF")  # see DiskCache._open
            self.conn.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value)")
            self.conn.execute("INSERT OR IGNORE INTO counters VALUES ('since', ?)", (_now_iso(),))

    def incr(self, name: str, delta: int = 1) -> None:
        with self.lock:
            self.conn.execute(
                "INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value", (name, delta)
            )

    def all(self) -> dict[str, Any]:
        with self.lock:
            return dict(self.conn.execute("SELECT name, value FROM counters").fetchall())

    def reset(self) -> None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM counters")
            self.conn.execute("INSERT INTO counters VALUES ('since', ?)", (_now_iso(),))
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class DiskCache:
    """diskcache (SQLite + files) under one folder readable by the current user only."""

    backend = "disk"

    def __init__(self, path: Path, settings: CacheSettings) -> None:
        self.location = str(path)
        self.ttl = settings.ttl_seconds
        self.max_bytes = settings.max_bytes
        try:
            private_dir(path, own=True)
            try:
                self._open(path)
            except sqlite3.DatabaseError as exc:  # damaged (see _open): it is only a cache, start again
                log.warning("query cache at %s is damaged (%s); starting an empty one", path, exc)
                _remove_store(path)
                self._open(path)
            _private_files(path)
        except (OSError, sqlite3.Error) as exc:
            raise CacheUnavailable(f"query cache folder {path} is not usable ({exc}); set cache.disk_path to a writable folder") from None

    def _open(self, path: Path) -> None:
        import diskcache

        # cull_limit=0: no culling inside set(); put() expires and evicts itself, counting both.
        # synchronous OFF: no fsync per write (a hit writes its LRU time and a counter). A process
        # that dies loses nothing; an operating-system crash may damage the files, and the next
        # open then starts an empty cache: answers are recomputed, never wrong.
        self.entries = diskcache.Cache(
            str(path / "entries"), size_limit=self.max_bytes, eviction_policy="least-recently-used", cull_limit=0, sqlite_synchronous=0
        )
        self.counters = _Counters(path / "stats.db")

    def get(self, key: str) -> bytes | None:
        value = self.entries.get(key)
        self.counters.incr("hits" if value is not None else "misses")
        return value

    def put(self, key: str, value: bytes) -> None:
        if self.entries.add(key, value, expire=self.ttl):
            self.counters.incr("stores")
        expired = self.entries.expire()
        evicted = self.entries.cull() if self.entries.volume() > self.max_bytes else 0
        if expired:
            self.counters.incr("expired", expired)
        if evicted:
            self.counters.incr("evictions", evicted)

    def stats(self) -> CacheStats:
        expired = self.entries.expire()
        if expired:
            self.counters.incr("expired", expired)
        c = self.counters.all()
        return CacheStats(
            "disk", self.location, c.get("hits", 0), c.get("misses", 0), c.get("stores", 0), len(self.entries),
            self.entries.volume(), self.max_bytes, c.get("evictions", 0), c.get("expired", 0), c.get("since"),
        )  # fmt: skip

    def clear(self) -> int:
        removed = len(self.entries)
        self.entries.clear()
        self.counters.reset()
        return removed

    def close(self) -> None:
        self.entries.close()
        self.counters.close()


def _remove_store(path: Path) -> None:
    """Delete the cache's own files under `path` (nothing else there)."""
    shutil.rmtree(path / "entries", ignore_errors=True)
    for name in ("stats.db", "stats.db-wal", "stats.db-shm"):
        (path / name).unlink(missing_ok=True)


def _private_files(path: Path) -> None:
    """The databases and their folder: user only (the folder's mode already keeps others out of
    everything inside it, including value files diskcache adds later)."""
    for item in (path / "entries", path / "entries" / "cache.db", path / "stats.db"):
        restrict(item)


# ---------------------------------------------------------------------------------------------
# redis

_GET = """
local v = redis.call('GET', KEYS[1])
if v then
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[3], 'hits', 1)
else
  redis.call('HINCRBY', KEYS[3], 'misses', 1)
end
return v
"""

# KEYS: entry, lru (zset member -> last use), sizes (hash member -> bytes), stats (hash)
# ARGV: value, ttl, now, max_bytes, member, entry key prefix
_PUT = """
local size = string.len(ARGV[1])
local old = redis.call('HGET', KEYS[3], ARGV[5])
if old then redis.call('HINCRBY', KEYS[4], 'bytes', -tonumber(old)) else redis.call('HINCRBY', KEYS[4], 'stores', 1) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[5], size)
local total = redis.call('HINCRBY', KEYS[4], 'bytes', size)
local evicted, expired = 0, 0
while total > tonumber(ARGV[4]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #oldest == 0 then break end
  local m = oldest[1]
  if redis.call('DEL', ARGV[6] .. m) == 1 then evicted = evicted + 1 else expired = expired + 1 end
  redis.call('ZREM', KEYS[2], m)
  local s = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  redis.call('HDEL', KEYS[3], m)
  total = redis.call('HINCRBY', KEYS[4], 'bytes', -s)
end
if evicted > 0 then redis.call('HINCRBY', KEYS[4], 'evictions', evicted) end
if expired > 0 then redis.call('HINCRBY', KEYS[4], 'expired', expired) end
return {evicted, expired}
"""

# Forget entries whose key Redis already expired (TTL): KEYS lru, sizes, stats; ARGV prefix
_PRUNE = """
local gone = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', ARGV[1] .. m) == 0 then
    redis.call('ZREM', KEYS[1], m)
    local s = tonumber(redis.call('HGET', KEYS[2], m) or '0')
    redis.call('HDEL', KEYS[2], m)
    redis.call('HINCRBY', KEYS[3], 'bytes', -s)
    gone = gone + 1
  end
end
if gone > 0 then redis.call('HINCRBY', KEYS[3], 'expired', gone) end
return gone
"""


class RedisCache:
    """Entries as Redis strings with a TTL; LRU order in a sorted set; sizes and counters in hashes.

    The bound applies to this cache's own bytes (the sum of its values), whatever else the Redis
    server holds. The scripts touch keys they compute, so this needs a single Redis server, not
    a Redis Cluster."""

    backend = "redis"

    def __init__(self, settings: CacheSettings) -> None:
        import redis

        self._errors = (redis.exceptions.RedisError, OSError)
        self.location = mask_url(settings.redis_url or "")
        self.ttl = settings.ttl_seconds
        self.max_bytes = settings.max_bytes
        p = settings.redis_prefix
        self.entry_prefix, self.lru, self.sizes, self.counters = f"{p}e:", f"{p}lru", f"{p}sizes", f"{p}stats"
        self.prefix = p
        self.client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=settings.redis_timeout_s, socket_connect_timeout=settings.redis_timeout_s
        )
        self._get = self.client.register_script(_GET)
        self._put = self.client.register_script(_PUT)
        self._prune = self.client.register_script(_PRUNE)
        self._call(self.client.hsetnx, self.counters, "since", _now_iso())

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise CacheUnavailable(f"Redis query cache at {self.location} is not reachable ({exc}); check cache.redis_url") from None

    def get(self, key: str) -> bytes | None:
        return self._call(self._get, keys=[self.entry_prefix + key, self.lru, self.counters], args=[time.time(), key])

    def put(self, key: str, value: bytes) -> None:
        self._call(
            self._put,
            keys=[self.entry_prefix + key, self.lru, self.sizes, self.counters],
            args=[value, self.ttl, time.time(), self.max_bytes, key, self.entry_prefix],
        )

    def stats(self) -> CacheStats:
        self._call(self._prune, keys=[self.lru, self.sizes, self.counters], args=[self.entry_prefix])
        raw = {k.decode(): v.decode() for k, v in self._call(self.client.hgetall, self.counters).items()}
        entries = self._call(self.client.zcard, self.lru)

        def n(name: str) -> int:
            return int(raw.get(name, 0))

        return CacheStats(
            "redis", self.location, n("hits"), n("misses"), n("stores"), entries, n("bytes"), self.max_bytes,
            n("evictions"), n("expired"), raw.get("since"),
        )  # fmt: skip

    def clear(self) -> int:
        removed = self._call(self.client.zcard, self.lru)
        batch: list[bytes] = []
        for name in self._call(self.client.scan_iter, match=self.prefix + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                self._call(self.client.delete, *batch)
                batch = []
        if batch:
            self._call(self.client.delete, *batch)
        self._call(self.client.hset, self.counters, "since", _now_iso())
        return removed

    def close(self) -> None:
        self.client.close()


def open_cache(settings: CacheSettings, base_dir: Path) -> QueryCache:
    """The configured cache store (`base_dir` resolves a relative disk_path)."""
    if settings.effective_backend == "redis":
        return RedisCache(settings)
    path = Path(settings.disk_path)
    return DiskCache(path if path.is_absolute() else base_dir / path, settings)


# ---------------------------------------------------------------------------------------------
# values: a query answer as JSON, with the Python type of each column kept


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if -(2**63) <= value < 2**64 else "bigint"  # JSON readers turn longer integers into floats
    if isinstance(value, float):
        return "float" if math.isfinite(value) else "nonfinite"  # NaN and infinities are not JSON
    if isinstance(value, str):
        return "str"
    if isinstance(value, Decimal):
        return "decimal"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, dtime):
        return "time"
    if isinstance(value, bytes | bytearray | memoryview):
        return "bytes"
    return "str"  # anything else (uuid, interval ...) as its text


_ENCODE = {
    "bool": None,
    "int": None,
    "bigint": str,
    "float": None,
    "nonfinite": repr,
    "str": str,
    "decimal": str,
    "datetime": datetime.isoformat,
    "date": date.isoformat,
    "time": dtime.isoformat,
    "bytes": lambda v: base64.b64encode(bytes(v)).decode(),
}
_DECODE = {
    "bool": None,
    "int": None,
    "bigint": int,
    "float": None,
    "nonfinite": float,
    "str": None,
    "decimal": Decimal,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": dtime.fromisoformat,
    "bytes": base64.b64decode,
}


def encode_result(columns: list[str], rows: list[tuple]) -> bytes:
    """JSON bytes of an answer, column by column; a column whose values mix types tags each value."""
    kinds, values = [], []
    for column in zip(*rows, strict=True) if rows else [() for _ in columns]:
        seen = {_kind(v) for v in column if v is not None}
        kind = seen.pop() if len(seen) == 1 else ("mixed" if seen else "str")
        fn = _ENCODE.get(kind)
        if kind == "mixed":
            coded = [None if v is None else _tagged(v) for v in column]
        elif fn is None:
            coded = list(column)
        else:
            coded = [None if v is None else fn(v) for v in column]
        kinds.append(kind)
        values.append(coded)
    return orjson.dumps({"c": columns, "k": kinds, "v": values, "n": len(rows)})


def _tagged(value: Any) -> list:
    kind = _kind(value)
    fn = _ENCODE[kind]
    return [kind, fn(value) if fn else value]


def _untag(value: list) -> Any:
    fn = _DECODE[value[0]]
    return fn(value[1]) if fn else value[1]


def decode_result(blob: bytes) -> tuple[list[str], list[tuple]]:
    """The answer `encode_result` stored."""
    data = orjson.loads(blob)
    columns = []
    for kind, column in zip(data["k"], data["v"], strict=True):
        fn = _untag if kind == "mixed" else _DECODE[kind]
        if fn is None:
            columns.append(column)
        elif None in column:
            columns.append([None if v is None else fn(v) for v in column])
        else:
            columns.append(list(map(fn, column)))
    return data["c"], list(zip(*columns, strict=True)) if columns else [() for _ in range(data["n"])]


class DecodedAnswers:
    """Answers this process already decoded, by cache key, least recently used dropped first.

    Only the decoding is skipped: the shared store is still asked for every key, so it alone
    decides hit or miss, TTL and eviction, and counts the hit. A key names one data version,
    so the same key always holds the same answer. Bounded by the stored size of the answers.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self.max_bytes = max_bytes
        self._answers: OrderedDict[str, tuple[int, list[str], list[tuple]]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def decode(self, key: str, blob: bytes) -> tuple[list[str], list[tuple]]:
        """The answer `blob` holds: decoded once per key, then from memory (a new row list each time)."""
        with self._lock:
            held = self._answers.get(key)
            if held is not None:
                self._answers.move_to_end(key)
                return list(held[1]), list(held[2])
        columns, rows = decode_result(blob)
        if len(blob) <= self.max_bytes:
            with self._lock:
                if key not in self._answers:
                    self._answers[key] = (len(blob), columns, rows)
                    self._bytes += len(blob)
                while self._bytes > self.max_bytes:
                    _, (size, _c, _r) = self._answers.popitem(last=False)
                    self._bytes -= size
        return list(columns), list(rows)
