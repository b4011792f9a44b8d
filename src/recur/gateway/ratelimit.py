"""Token buckets per API key: in memory, or in Redis shared by every gateway instance."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("recur.ratelimit")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after: int  # whole seconds until one token is back; 0 when allowed


class RateLimiter(Protocol):
    async def take(self, key: str) -> Decision: ...


class MemoryTokenBucket:
    """One bucket per key in this process: the embedded default and the fallback without Redis."""

    def __init__(self, rate: float, burst: int, now: Callable[[], float] | None = None):
        self.rate = rate
        self.burst = burst
        self._now = now or time.monotonic
        self._buckets: dict[str, tuple[float, float]] = {}

    async def take(self, key: str) -> Decision:
        now = self._now()
        tokens, stamp = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            return Decision(True, int(tokens - 1), 0)
        self._buckets[key] = (tokens, now)
        return Decision(False, 0, max(1, math.ceil((1 - tokens) / self.rate)))


# KEYS[1] bucket key; ARGV: rate per second, burst. Time from the Redis server, so every
# gateway instance agrees on it. Returns {allowed, remaining, retry_after_ms}.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'stamp', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
local wait = 0
if allowed == 0 then wait = math.ceil((1 - tokens) / rate * 1000) end
return {allowed, math.floor(tokens), wait}
"""


# A Redis that does not answer at once costs a request little: short timeouts, no retries.
REDIS_TIMEOUT_SECONDS = 0.25
# After Redis failed, the local bucket answers alone for this long before Redis is tried again:
# a Redis that is down costs one failed attempt a second, not one per request.
REDIS_RETRY_SECONDS = 1.0


class RedisTokenBucket:
    """The bucket as one atomic Lua script, falling back to a local bucket if Redis fails."""

    def __init__(
        self,
        redis: Redis,
        rate: float,
        burst: int,
        prefix: str = "recur:rl:",
        now: Callable[[], float] | None = None,
    ):
        self.rate = rate
        self.burst = burst
        self._redis = redis
        self._script = redis.register_script(_TAKE)
        self._prefix = prefix
        self._fallback = MemoryTokenBucket(rate, burst, now)
        self._now = now or time.monotonic
        self._local_until = 0.0

    @classmethod
    def from_url(cls, url: str, rate: float, burst: int) -> RedisTokenBucket:
        """A bucket in the Redis at `url`, with the timeouts a request can afford."""
        redis = Redis.from_url(
            url,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
        return cls(redis, rate, burst)

    async def take(self, key: str) -> Decision:
        if self._now() < self._local_until:
            return await self._fallback.take(key)
        try:
            allowed, remaining, wait_ms = await self._script(
                keys=[self._prefix + key], args=[self.rate, self.burst]
            )
        except (RedisError, OSError):
            log.warning(
                "redis unreachable, rate limiting in process for %.0f s", REDIS_RETRY_SECONDS
            )
            self._local_until = self._now() + REDIS_RETRY_SECONDS
            return await self._fallback.take(key)
        retry_after = 0 if allowed else max(1, math.ceil(int(wait_ms) / 1000))
        return Decision(bool(allowed), int(remaining), retry_after)
