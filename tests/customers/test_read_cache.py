"""Customer and plan reads served from Redis: never stale after a committed change, and still
answered by the database when Redis is unreachable."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from recur.app import create_app
from recur.gateway.keys import create_key
from recur.kit.cache import Cache
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        scheduler_enabled=False,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )


@pytest.fixture
def customer_selects(runtime: Runtime) -> Iterator[list[str]]:
    """The SELECTs of the customers table this runtime's database runs."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split()).lower()
        if text.startswith("select") and re.search(r"from (\S+\.)?\"?customers\"?( |$)", text):
            seen.append(text)

    engine = runtime.db.engine.sync_engine
    sa.event.listen(engine, "before_cursor_execute", note)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", note)


async def _read(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    response = await api.get(path)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_customer_read_is_served_from_redis(
    api: httpx.AsyncClient, runtime: Runtime, redis_url: str, customer_selects: list[str]
) -> None:
    created = (await api.post("/v1/customers", json={"name": "Ada"})).json()
    path = f"/v1/customers/{created['id']}"
    customer_selects.clear()
    first = await _read(api, path)
    assert customer_selects  # the first read went to the database
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(f"recur:cache:customer:*:{created['id']}")]
        assert len(keys) == 1
    finally:
        await redis.aclose()
    customer_selects.clear()
    assert await _read(api, path) == first
    assert customer_selects == []


async def test_every_customer_change_is_seen_by_the_next_read(api: httpx.AsyncClient) -> None:
    customer = (await api.post("/v1/customers", json={"name": "Ada"})).json()
    path = f"/v1/customers/{customer['id']}"
    assert (await _read(api, path))["name"] == "Ada"

    # An update.
    assert (await api.patch(path, json={"name": "Ada L."})).status_code == 200
    assert (await _read(api, path))["name"] == "Ada L."

    # A credit: the balance, and the currency the customer adopts with it.
    credit = await api.post(f"{path}/credits", json={"amount": 500, "currency": "USD"})
    assert credit.status_code == 200, credit.text
    seen = await _read(api, path)
    assert (seen["balance"], seen["currency"]) == (500, "USD")

    # The first card becomes the default; another one made the default by an update.
    first = await api.post(f"{path}/payment-methods", json={"card": CARD})
    assert first.status_code == 200, first.text
    assert (await _read(api, path))["default_payment_method_id"] == first.json()["id"]
    second = (await api.post(f"{path}/payment-methods", json={"card": CARD})).json()
    assert (await api.patch(path, json={"default_payment_method_id": second["id"]})).is_success
    assert (await _read(api, path))["default_payment_method_id"] == second["id"]

    # Detaching the default clears it (the customers service learns it from an event).
    detached = await api.delete(f"{path}/payment-methods/{second['id']}")
    assert detached.status_code == 200, detached.text
    assert (await _read(api, path))["default_payment_method_id"] is None


async def test_plan_reads_are_cached_and_never_stale(
    api: httpx.AsyncClient, runtime: Runtime, redis_url: str
) -> None:
    missing = await api.get("/v1/plans/plan_missing")
    assert missing.status_code == 404  # a miss is not cached
    product = (await api.post("/v1/products", json={"name": "Pro"})).json()
    body = {"product_id": product["id"], "currency": "USD", "amount": 900, "interval": "month"}
    plan = (await api.post("/v1/plans", json=body)).json()
    assert await _read(api, f"/v1/plans/{plan['id']}") == plan
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(f"recur:cache:plan:*:{plan['id']}")]
        assert len(keys) == 1
    finally:
        await redis.aclose()
    assert await _read(api, f"/v1/plans/{plan['id']}") == plan
    # A change to a plan deletes its key after commit; the next read sees the database.
    tenant_id = keys[0].decode().split(":")[3]
    async with runtime.uow() as uow:
        from recur.subscriptions.catalog import plan_cache_key
        from recur.subscriptions.tables import plans

        await uow.execute(sa.update(plans).where(plans.c.id == plan["id"]).values(amount=1200))
        key = plan_cache_key(tenant_id, plan["id"])
        uow.after_commit(lambda: uow.cache.delete(key))
        await uow.commit()
    assert (await _read(api, f"/v1/plans/{plan['id']}"))["amount"] == 1200


async def test_reads_work_with_redis_unreachable(database_url: str) -> None:
    # Nothing listens on port 1: every cache call fails, and the database answers.
    settings = Settings(
        database_url=database_url,
        redis_url="redis://127.0.0.1:1/0",
        scheduler_enabled=False,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )
    rt = build_runtime(settings)
    try:
        issued = await create_key(rt.db, rt.clock, "acme")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(rt)),
            base_url="http://recur.test",
            headers={"Authorization": f"Bearer {issued.secret}"},
        ) as api:
            customer = (await api.post("/v1/customers", json={"name": "Ada"})).json()
            path = f"/v1/customers/{customer['id']}"
            assert (await _read(api, path))["name"] == "Ada"
            assert (await api.patch(path, json={"name": "Bea"})).status_code == 200
            assert (await _read(api, path))["name"] == "Bea"
            product = (await api.post("/v1/products", json={"name": "Pro"})).json()
            body = {
                "product_id": product["id"],
                "currency": "USD",
                "amount": 9,
                "interval": "month",
            }
            plan = (await api.post("/v1/plans", json=body)).json()
            assert await _read(api, f"/v1/plans/{plan['id']}") == plan
    finally:
        await rt.close()


async def test_a_change_whose_own_invalidation_was_lost_is_invalidated_by_its_event(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    customer = (await api.post("/v1/customers", json={"name": "Ada"})).json()
    path = f"/v1/customers/{customer['id']}"
    assert (await _read(api, path))["name"] == "Ada"  # cached now

    # The update commits while Redis does not answer its writer: the delete after the commit
    # is lost, and so is the first delivery of its event to the cache's consumer.
    reachable = runtime.bus.cache
    runtime.bus.cache = Cache.from_url("redis://127.0.0.1:1/0")
    try:
        assert (await api.patch(path, json={"name": "Bea"})).status_code == 200
    finally:
        await runtime.bus.cache.close()
        runtime.bus.cache = reachable
    assert (await _read(api, path))["name"] == "Ada"  # what the lost delete leaves

    # The event is still undelivered to that consumer; its redelivery drops the stale copy.
    assert await runtime.bus.redeliver_pending(older_than=timedelta(0)) >= 1
    assert (await _read(api, path))["name"] == "Bea"


async def test_another_service_reads_customers_from_the_cache_without_a_call(
    settings: Settings,
) -> None:
    from recur.customers.schemas import CustomerCreate, CustomerUpdate
    from recur.customers.service import create_customer, update_customer
    from recur.service_app import create_service_app

    from ..contracts.conftest import INTERNAL_TOKEN, ServedApp

    calls: list[str] = []
    served = ServedApp(None)
    customers_settings = settings.model_copy(update={"internal_token": INTERNAL_TOKEN})
    customers_rt = build_runtime(customers_settings, local_services={"customers"})
    app = create_service_app(customers_rt, "customers")

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/internal/customers/"):
            calls.append(scope["path"].rpartition("/")[2])
        await app(scope, receive, send)

    served.app = counting
    await served.start()
    # A payments process: customers is reached over HTTP, with the same Redis.
    payments_settings = customers_settings.model_copy(
        update={"service_urls": {"customers": served.url}}
    )
    payments_rt = build_runtime(payments_settings, local_services={"payments"})
    try:
        made = await create_customer(customers_rt, "ten_cache", CustomerCreate(name="Ada"))
        client = payments_rt.customers
        assert (await client.get("ten_cache", made.id)).name == "Ada"
        assert calls == ["get"]  # a miss: the service read it, and cached it
        assert (await client.get("ten_cache", made.id)).name == "Ada"
        assert calls == ["get"]  # a hit: no call
        await update_customer(customers_rt, "ten_cache", made.id, CustomerUpdate(name="Grace"))
        assert (await client.get("ten_cache", made.id)).name == "Grace"  # never stale
        assert calls == ["get", "get"]
        many = await client.get_many("ten_cache", [made.id, "cus_unknown"])
        assert list(many) == [made.id]
        assert calls == ["get", "get", "get-many"]  # only the one not cached was asked for
    finally:
        await payments_rt.close()
        await served.stop()
        await customers_rt.close()


async def test_a_consumer_of_a_customers_change_reads_the_changed_customer(
    api: httpx.AsyncClient, runtime: Runtime, tenant: Any
) -> None:
    from recur.kit.db import UnitOfWork
    from recur.kit.events import Event
    from recur.subscriptions.tables import inbox

    created = (await api.post("/v1/customers", json={"name": "Ada"})).json()
    await _read(api, f"/v1/customers/{created['id']}")  # now cached
    seen: list[str] = []

    async def consume(uow: UnitOfWork, event: Event) -> None:
        # As a consumer in another service does: through the client, the cache first (after
        # its own transaction, as every call to another service).
        async def read() -> None:
            seen.append((await runtime.customers.get(tenant.id, event.payload["id"])).name)

        uow.after_commit(read)

    runtime.bus.subscribe("customer.updated", "subscriptions", inbox, consume)
    # First, as a consumer in another process may well be: before the customers service's own
    # consumer of the event has dropped the cached customer again.
    consumers = runtime.bus.consumers["customer.updated"]
    consumers.insert(0, consumers.pop())
    assert (await api.patch(f"/v1/customers/{created['id']}", json={"name": "Grace"})).is_success
    assert seen == ["Grace"]


async def test_a_cached_value_that_no_longer_reads_as_a_customer_is_a_miss(
    api: httpx.AsyncClient, runtime: Runtime, tenant: Any
) -> None:
    from recur.customers.repository import cache_key

    created = (await api.post("/v1/customers", json={"name": "Ada"})).json()
    key = cache_key(tenant.id, created["id"])
    # As another version of Recur may have written it.
    entry = await runtime.cache.get(key)
    await runtime.cache.set(key, {"id": created["id"], "named": "Ada"}, entry.version)
    assert (await runtime.cache.get(key)).value is not None
    assert (await _read(api, f"/v1/customers/{created['id']}"))["name"] == "Ada"
