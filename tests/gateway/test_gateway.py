"""The gateway through the real app: keys, tenants, rate limits, request ids, idempotency."""

from __future__ import annotations

import httpx
import pytest
from typer.testing import CliRunner

from recur.app import create_app
from recur.cli import app as cli
from recur.gateway.keys import create_key
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings


async def test_no_key_or_a_wrong_key_is_401(app) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        response = await anonymous.get("/v1/customers")
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"
        response = await anonymous.get(
            "/v1/customers", headers={"Authorization": "Bearer sk_not_a_key"}
        )
        assert response.status_code == 401
        response = await anonymous.post("/payment?customer_id=1&amount=1")
        assert response.status_code == 401
        response = await anonymous.get("/payment-status?customer_id=1")
        assert response.status_code == 401


async def test_keys_are_stored_hashed(runtime: Runtime) -> None:
    import sqlalchemy as sa

    from recur.gateway.tables import api_keys

    issued = await create_key(runtime.db, runtime.clock, "acme")
    async with runtime.uow() as uow:
        rows = await uow.fetch_all(sa.select(api_keys))
    assert len(rows) == 1
    assert issued.secret not in repr(tuple(rows[0]))
    assert rows[0].secret_hash != issued.secret


async def test_a_second_key_of_the_same_tenant_sees_the_same_objects(app, runtime, api) -> None:
    created = (await api.post("/v1/customers", json={"name": "Ada"})).json()
    second = await create_key(runtime.db, runtime.clock, "acme")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://t",
        headers={"Authorization": f"Bearer {second.secret}"},
    ) as client:
        assert (await client.get(f"/v1/customers/{created['id']}")).status_code == 200


async def test_request_id_is_echoed_or_made(api) -> None:
    response = await api.get("/v1/customers", headers={"X-Request-Id": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    made = await api.get("/v1/customers")
    assert made.headers["x-request-id"].startswith("req_")
    bad = await api.get("/v1/customers", headers={"X-Request-Id": "has spaces\tand tabs"})
    assert bad.headers["x-request-id"].startswith("req_")


async def test_docs_and_openapi_are_public(app) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        docs = await anonymous.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        spec = (await anonymous.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/v1/customers",
        "/v1/customers/{customer_id}/billing-history",
        "/v1/plans",
        "/v1/products",
        "/v1/subscriptions",
        "/v1/subscriptions/{subscription_id}/cancel",
        "/v1/orders",
        "/v1/orders/{order_id}/invoice",
        "/v1/payments",
        "/v1/refunds",
        "/v1/customers/{customer_id}/payment-methods",
        "/v1/test-clocks/{test_clock_id}/advance",
        "/payment",
        "/payment-status",
    ):
        assert path in paths, path


@pytest.fixture
def limited_settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        rate_limit_per_second=1,
        rate_limit_burst=3,
    )


async def test_rate_limit_per_key_gives_429_with_retry_after(limited_settings) -> None:
    rt = build_runtime(limited_settings)
    try:
        app = create_app(rt)
        first = await create_key(rt.db, rt.clock, "acme")
        second = await create_key(rt.db, rt.clock, "acme")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            statuses = []
            for _ in range(5):
                r = await client.get(
                    "/v1/customers", headers={"Authorization": f"Bearer {first.secret}"}
                )
                statuses.append(r.status_code)
            assert statuses[:3] == [200, 200, 200]
            assert statuses[3:] == [429, 429]
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["type"] == "rate_limit_error"
            # Another key has its own bucket.
            other = await client.get(
                "/v1/customers", headers={"Authorization": f"Bearer {second.secret}"}
            )
            assert other.status_code == 200
            assert other.headers["ratelimit-limit"] == "3"
    finally:
        await rt.close()


async def test_idempotency_key_replays_and_refuses_another_body(api) -> None:
    headers = {"Idempotency-Key": "create-ada-1"}
    first = await api.post("/v1/customers", json={"name": "Ada"}, headers=headers)
    again = await api.post("/v1/customers", json={"name": "Ada"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other = await api.post("/v1/customers", json={"name": "Grace"}, headers=headers)
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    listed = (await api.get("/v1/customers")).json()["data"]
    assert [c["name"] for c in listed] == ["Ada"]


async def test_idempotency_keys_are_per_tenant(api, other_tenant) -> None:
    headers = {"Idempotency-Key": "same-key"}
    mine = await api.post("/v1/customers", json={"name": "Ada"}, headers=headers)
    theirs = await other_tenant.client.post("/v1/customers", json={"name": "Bob"}, headers=headers)
    assert theirs.status_code == 200
    assert theirs.json()["id"] != mine.json()["id"]


async def test_a_4xx_is_replayed_too(api) -> None:
    headers = {"Idempotency-Key": "bad-1"}
    first = await api.post("/v1/customers", json={"currency": "ZZZ"}, headers=headers)
    again = await api.post("/v1/customers", json={"currency": "ZZZ"}, headers=headers)
    assert first.status_code == again.status_code == 400
    assert again.headers["idempotent-replayed"] == "true"


async def test_redis_token_bucket_is_shared_between_limiters(redis_url: str) -> None:
    from redis.asyncio import Redis

    from recur.gateway.ratelimit import RedisTokenBucket

    redis = Redis.from_url(redis_url)
    try:
        await redis.delete("recur:test:rl:key_shared")
        one = RedisTokenBucket(redis, rate=0.5, burst=4, prefix="recur:test:rl:")
        two = RedisTokenBucket(redis, rate=0.5, burst=4, prefix="recur:test:rl:")
        decisions = [await (one if i % 2 else two).take("key_shared") for i in range(6)]
        assert [d.allowed for d in decisions] == [True, True, True, True, False, False]
        assert decisions[4].retry_after >= 1
        assert decisions[3].remaining == 0
    finally:
        await redis.delete("recur:test:rl:key_shared")
        await redis.aclose()


async def test_redis_outage_falls_back_to_a_local_bucket() -> None:
    from redis.asyncio import Redis

    from recur.gateway.ratelimit import RedisTokenBucket

    # Nothing listens on port 1: every Redis call fails at once.
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    bucket = RedisTokenBucket(redis, rate=1, burst=2)
    decisions = [await bucket.take("k") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    await redis.aclose()


def test_keys_create_cli_prints_the_key_last(database_url: str, monkeypatch) -> None:
    monkeypatch.setenv("RECUR_DATABASE_URL", database_url)
    result = CliRunner().invoke(cli, ["keys", "create", "--tenant", "acme"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    assert secret.startswith("sk_")
    again = CliRunner().invoke(cli, ["keys", "create", "--tenant", "acme"])
    assert again.output.strip().splitlines()[-1] != secret
    missing = CliRunner().invoke(cli, ["keys", "create"])
    assert missing.exit_code != 0
