"""Settings of the query service and its cache: the `cache` section of the platform settings."""

from __future__ import annotations

from typing import Annotated, Literal

from annotated_types import Ge, Gt, Le, MinLen

from config.sections import section, setting
from utils.errors import ConfigError


@section
class CacheSettings:
    enabled: bool = setting(True, doc="answer repeated queries from the query cache (false: always ask the warehouse)")
    backend: Literal["auto", "disk", "redis"] = setting(
        "auto", doc="where cached answers live: auto (redis when redis_url is set, else disk), disk or redis"
    )
    redis_url: str | None = setting(None, doc="Redis URL of a shared cache, e.g. redis://127.0.0.1:6379/0; empty keeps it on disk")
    redis_prefix: Annotated[str, MinLen(1)] = setting("rdp:cache:", doc="prefix of every Redis key the cache writes")
    redis_timeout_s: Annotated[float, Gt(0)] = setting(2.0, doc="seconds to wait for Redis before answering without the cache")
    disk_path: Annotated[str, MinLen(1)] = setting("data/cache", doc="folder of the disk cache (relative to the project folder)")
    ttl_seconds: Annotated[int, Ge(1)] = setting(86_400, doc="a cached answer is dropped after this many seconds")
    max_bytes: Annotated[int, Ge(64 * 1024)] = setting(
        256 * 1024 * 1024, doc="size bound of the cache; least recently used answers go first"
    )
    max_entry_bytes: Annotated[int, Ge(1024)] = setting(16 * 1024 * 1024, doc="answers larger than this (serialised) are not cached")
    statement_timeout_s: Annotated[float, Gt(0), Le(86_400)] = setting(30.0, doc="`query` cancels a statement that runs longer than this")
    max_rows: Annotated[int, Ge(1)] = setting(100_000, doc="`query` fails rather than return more rows than this (add LIMIT or aggregate)")
    use_aggregates: bool = setting(
        True, doc="standard queries read the aggregate tables (agg_daily_*) when they exist instead of scanning fact_sales"
    )

    @property
    def effective_backend(self) -> Literal["disk", "redis"]:
        """disk or redis, with auto resolved (checked here, not by a validator: settings layers are
        validated one by one, and backend and redis_url may come from different layers)."""
        if self.backend == "redis" and not self.redis_url:
            raise ConfigError("cache.backend is redis but cache.redis_url is empty; set it, e.g. redis://127.0.0.1:6379/0")
        if self.backend == "auto":
            return "redis" if self.redis_url else "disk"
        return self.backend
