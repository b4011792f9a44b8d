"""The Redis token bucket when Redis fails: the local bucket answers alone for a moment, then
Redis is tried again and used once it answers."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from recur.gateway.ratelimit import REDIS_RETRY_SECONDS, RedisTokenBucket


async def test_a_failed_redis_is_left_alone_for_a_moment_then_used_again(redis_url: str) -> None:
    now = [100.0]
    redis = Redis.from_url(redis_url)
    bucket = RedisTokenBucket(redis, rate=1, burst=3, prefix="recur:test:rlf:", now=lambda: now[0])
    script = bucket._script
    calls = []

    async def failing(**kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs)
        if len(calls) == 1:
            raise RedisConnectionError("Redis is down")
        return await script(**kwargs)

    bucket._script = failing  # type: ignore[assignment]
    try:
        await redis.delete("recur:test:rlf:k")
        # Redis fails: the local bucket answers, and answers alone within the retry time.
        assert [(await bucket.take("k")).allowed for _ in range(4)] == [True, True, True, False]
        assert len(calls) == 1
        assert not await redis.exists("recur:test:rlf:k")
        # Then Redis is asked again, and its bucket (full: the local one was spent) is used.
        now[0] += REDIS_RETRY_SECONDS
        decision = await bucket.take("k")
        assert (decision.allowed, decision.remaining) == (True, 2)
        assert len(calls) == 2
        assert await redis.exists("recur:test:rlf:k")
    finally:
        await redis.delete("recur:test:rlf:k")
        await redis.aclose()


async def test_from_url_gives_up_on_a_silent_redis_at_once() -> None:
    # A server that accepts the connection and never answers: the request must not wait on it.
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    bucket = RedisTokenBucket.from_url(f"redis://127.0.0.1:{port}/0", rate=1, burst=2)
    try:
        # Its timeouts are well under a second; a client without any would wait here forever.
        decision = await asyncio.wait_for(bucket.take("k"), timeout=5)
        assert decision.allowed
    finally:
        await bucket._redis.aclose()
        server.close()
        await server.wait_closed()
