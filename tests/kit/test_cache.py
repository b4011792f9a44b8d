"""The Redis cache: JSON values with a TTL, versioned deletes, and misses when Redis fails."""

from __future__ import annotations

import logging
import uuid

import pytest
from prometheus_client import CollectorRegistry

from recur.kit.cache import Cache


@pytest.fixture
async def cache(redis_url: str):  # type: ignore[no-untyped-def]
    c = Cache.from_url(redis_url, prefix=f"recur:test:{uuid.uuid4().hex}:")
    yield c
    await c.close()


async def test_get_set_delete(cache: Cache) -> None:
    assert (await cache.get("customer:t:1")).value is None
    await cache.set("customer:t:1", {"name": "Ada", "n": [1, 2]}, ttl_seconds=30)
    assert (await cache.get("customer:t:1")).value == {"name": "Ada", "n": [1, 2]}
    await cache.delete("customer:t:1")
    assert (await cache.get("customer:t:1")).value is None


async def test_a_value_read_before_a_delete_is_not_stored_after_it(cache: Cache) -> None:
    before = await cache.get("customer:t:1")  # a reader misses, then loads the old row
    await cache.delete("customer:t:1")  # a writer commits, then invalidates
    await cache.set("customer:t:1", {"name": "old"}, before.version)
    assert (await cache.get("customer:t:1")).value is None
    after = await cache.get("customer:t:1")
    await cache.set("customer:t:1", {"name": "new"}, after.version)
    assert (await cache.get("customer:t:1")).value == {"name": "new"}


async def test_values_expire(cache: Cache, redis_url: str) -> None:
    await cache.set("plan:t:1", {"a": 1}, ttl_seconds=7)
    assert cache._redis is not None
    assert 0 < await cache._redis.ttl(cache.full_key("plan:t:1")) <= 7


async def test_get_many_and_set_many(cache: Cache) -> None:
    await cache.set_many([("customer:t:1", {"i": 1}, ""), ("customer:t:2", {"i": 2}, "")])
    entries = await cache.get_many(["customer:t:1", "customer:t:3", "customer:t:2"])
    assert [e.value for e in entries] == [{"i": 1}, None, {"i": 2}]


async def test_hits_and_misses_are_counted(cache: Cache) -> None:
    registry = CollectorRegistry()
    cache.instrument(registry)
    await cache.get("customer:t:1")
    await cache.set("customer:t:1", {"i": 1})
    await cache.get("customer:t:1")
    count = registry.get_sample_value
    labels = {"cache": "customer"}
    assert count("recur_cache_requests_total", {**labels, "result": "miss"}) == 1
    assert count("recur_cache_requests_total", {**labels, "result": "hit"}) == 1


async def test_without_redis_the_cache_is_disabled() -> None:
    cache = Cache.from_url(None)
    assert not cache.enabled
    await cache.set("customer:t:1", {"i": 1})
    assert (await cache.get("customer:t:1")).value is None
    await cache.delete("customer:t:1")


async def test_an_unreachable_redis_is_a_miss_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = Cache.from_url("redis://127.0.0.1:1/0")
    try:
        with caplog.at_level(logging.WARNING, logger="recur.cache"):
            for _ in range(3):
                assert (await cache.get("customer:t:1")).value is None
                await cache.set("customer:t:1", {"i": 1})
                await cache.delete("customer:t:1")
                assert await cache.get_many(["customer:t:1"]) == [(await cache.get("customer:t:1"))]
        warnings = [r for r in caplog.records if r.name == "recur.cache"]
        assert len(warnings) == 1
    finally:
        await cache.close()
