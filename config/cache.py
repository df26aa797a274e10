"""Settings of the query service and its cache: the `cache` section of the platform settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from utils.errors import ConfigError


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="answer repeated queries from the query cache (false: always ask the warehouse)")
    backend: Literal["auto", "disk", "redis"] = Field(
        "auto", description="where cached answers live: auto (redis when redis_url is set, else disk), disk or redis"
    )
    redis_url: str | None = Field(None, description="Redis URL of a shared cache, e.g. redis://127.0.0.1:6379/0; empty keeps it on disk")
    redis_prefix: str = Field("rdp:cache:", min_length=1, description="prefix of every Redis key the cache writes")
    redis_timeout_s: float = Field(2.0, gt=0, description="seconds to wait for Redis before answering without the cache")
    disk_path: str = Field("data/cache", min_length=1, description="folder of the disk cache (relative to the project folder)")
    ttl_seconds: int = Field(86_400, ge=1, description="a cached answer is dropped after this many seconds")
    max_bytes: int = Field(256 * 1024 * 1024, ge=64 * 1024, description="size bound of the cache; least recently used answers go first")
    max_entry_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="answers larger than this (serialised) are not cached")
    statement_timeout_s: float = Field(30.0, gt=0, le=86_400, description="`query` cancels a statement that runs longer than this")
    max_rows: int = Field(100_000, ge=1, description="`query` fails rather than return more rows than this (add LIMIT or aggregate)")
    use_aggregates: bool = Field(
        True, description="standard queries read the aggregate tables (agg_daily_*) when they exist instead of scanning fact_sales"
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
