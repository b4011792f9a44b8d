"""A read-through cache of JSON values in Redis, shared by every process of a topology.

Without Redis (`RECUR_REDIS_URL` unset, the embedded default) the cache is disabled: every
lookup misses and nothing is stored. With Redis, a Redis error is a miss too (logged once per
outage), never an error to the caller: the database answers instead.

A key has a version besides its value. `get` answers both; `set` stores a value only if the
version is still the one `get` saw, and `delete` bumps it. So a reader that loaded a row before a
writer committed, and stores it after the writer's `delete`, stores nothing: a read after a
committed change is never served the value from before it. Writers call `delete` once their
transaction has committed (`UnitOfWork.after_commit`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("recur.cache")

DEFAULT_TTL_SECONDS = 60
# A version outlives any read that started before the value was last changed.
_VERSION_TTL_SECONDS = 24 * 3600

# KEYS: value, version; ARGV: JSON, TTL, the version the reader saw ("" for none).
_SET_IF_VERSION = """
local current = redis.call('GET', KEYS[2]) or ''
if current == ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
  return 1
end
return 0
"""

# KEYS: value, version; ARGV: the version's TTL.
_INVALIDATE = """
redis.call('DEL', KEYS[1])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
return 1
"""


@dataclass(frozen=True)
class Entry:
    """What `get` found: `value` None on a miss; `version` to hand back to `set`."""

    value: Any | None
    version: str = ""


class Cache:
    def __init__(
        self,
        redis: Redis | None,
        *,
        prefix: str = "recur:cache:",
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
    ):
        self._redis = redis
        self._prefix = prefix
        self.ttl_seconds = ttl_seconds
        self._down = False
        self._count: Callable[[str, str], None] | None = None
        if redis is not None:
            self._set_script = redis.register_script(_SET_IF_VERSION)
            self._invalidate_script = redis.register_script(_INVALIDATE)

    @classmethod
    def from_url(cls, url: str | None, **kwargs: Any) -> Cache:
        """Redis at `url`; disabled without one."""
        if not url:
            return cls(None, **kwargs)
        # Short timeouts: an unreachable Redis must cost a read little before it falls back.
        redis = Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        return cls(redis, **kwargs)

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def full_key(self, key: str) -> str:
        """The Redis key of a value."""
        return self._prefix + key

    def _version_key(self, key: str) -> str:
        return self._prefix + "v:" + key

    def instrument(self, registry: CollectorRegistry) -> None:
        """Count lookups in `recur_cache_requests_total` (cache, result) on `registry`."""
        counter = Counter(
            "recur_cache_requests",
            "Cache lookups, by result.",
            ["cache", "result"],
            registry=registry,
        )
        self._count = lambda cache, result: counter.labels(cache, result).inc()

    def _counted(self, key: str, hit: bool) -> None:
        if self._count is not None:
            self._count(key.split(":", 1)[0], "hit" if hit else "miss")

    def _failed(self, action: str) -> None:
        if not self._down:
            self._down = True
            log.warning("redis unreachable, cache %s skipped until it answers again", action)

    def _ok(self) -> None:
        if self._down:
            self._down = False
            log.info("redis reachable again, cache back in use")

    async def get(self, key: str) -> Entry:
        """The value under `key` (None on a miss, or when Redis fails) and its version."""
        return (await self.get_many([key]))[0]

    async def get_many(self, keys: list[str]) -> list[Entry]:
        """`get` of each key, in one round trip."""
        if self._redis is None or not keys:
            return [Entry(None) for _ in keys]
        names = [self.full_key(k) for k in keys] + [self._version_key(k) for k in keys]
        try:
            raw = await self._redis.mget(names)
        except (RedisError, OSError):
            self._failed("read")
            for key in keys:
                self._counted(key, False)
            return [Entry(None) for _ in keys]
        self._ok()
        entries = []
        for i, key in enumerate(keys):
            value, version = raw[i], raw[len(keys) + i]
            self._counted(key, value is not None)
            entries.append(
                Entry(
                    json.loads(value) if value is not None else None,
                    version.decode() if isinstance(version, bytes) else (version or ""),
                )
            )
        return entries

    async def set(
        self, key: str, value: Any, version: str = "", ttl_seconds: int | None = None
    ) -> None:
        """Store `value` as JSON for `ttl_seconds`, if the key's version is still `version`."""
        await self.set_many([(key, value, version)], ttl_seconds)

    async def set_many(
        self, items: list[tuple[str, Any, str]], ttl_seconds: int | None = None
    ) -> None:
        """`set` of each (key, value, version), in one round trip."""
        if self._redis is None or not items:
            return
        ttl = ttl_seconds or self.ttl_seconds
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value, version in items:
                    await self._set_script(
                        keys=[self.full_key(key), self._version_key(key)],
                        args=[json.dumps(value), ttl, version],
                        client=pipe,
                    )
                await pipe.execute()
        except (RedisError, OSError):
            self._failed("write")
            return
        self._ok()

    async def delete(self, key: str, *, strict: bool = False) -> None:
        """Drop the value and bump its version, so no read from before stores it again. With
        `strict`, a Redis error is raised instead of logged (an event consumer's way to be
        retried until the invalidation lands)."""
        if self._redis is None:
            return
        try:
            await self._invalidate_script(
                keys=[self.full_key(key), self._version_key(key)], args=[_VERSION_TTL_SECONDS]
            )
        except (RedisError, OSError):
            self._failed("invalidation")
            if strict:
                raise
            return
        self._ok()

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


DISABLED = Cache(None)
