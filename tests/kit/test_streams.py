"""Events through Redis Streams: the outbox relay, consumer groups, and at-least-once delivery
applied exactly once, on the real Redis and on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from recur.app import create_app
from recur.customers.service import OUTBOX as CUSTOMERS_OUTBOX
from recur.customers.tables import inbox as customers_inbox
from recur.gateway.keys import create_key
from recur.kit.db import UnitOfWork
from recur.kit.events import Event
from recur.kit.streams import StreamTransport
from recur.orders.service import OUTBOX as ORDERS_OUTBOX
from recur.payments.tables import OUTBOX as PAYMENTS_OUTBOX
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings


@pytest.fixture
async def rt(database_url: str, redis_url: str) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        scheduler_enabled=False,
        event_transport="streams",
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )
    runtime = build_runtime(settings)
    transport = runtime.bus.transport
    assert transport is not None
    # Keys of this test's own, as tests run side by side on one Redis.
    transport.prefix = f"test:{secrets.token_hex(6)}:"
    transport.claim_idle_ms = 100
    transport.block_ms = 10
    yield runtime
    keys = [k async for k in transport.redis.scan_iter(match=transport.prefix + "*")]
    if keys:
        await transport.redis.delete(*keys)
    await runtime.close()


@pytest.fixture
async def api(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    issued = await create_key(rt.db, rt.clock, "acme")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(rt)),
        base_url="http://recur.test",
        headers={"Authorization": f"Bearer {issued.secret}"},
    ) as client:
        yield client


def transport_of(rt: Runtime) -> StreamTransport:
    assert rt.bus.transport is not None
    return rt.bus.transport


async def drain(rt: Runtime) -> int:
    """Let every service's group apply what it has to read, and what that made, until all is
    read; how many entries were read."""
    read = 0
    while True:
        round_ = 0
        for group in ("customers", "subscriptions", "orders", "payments"):
            round_ += await rt.bus.consume(group)
        if not round_:
            return read
        read += round_


async def paid_order(api: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035}
    attached = await api.post(
        f"/v1/customers/{customer['id']}/payment-methods", json={"card": card}
    )
    assert attached.status_code == 200, attached.text
    order = (
        await api.post(
            "/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "x", "unit_amount": 700}],
            },
        )
    ).json()
    payment = await api.post(
        "/v1/payments",
        json={
            "customer_id": customer["id"],
            "order_id": order["id"],
            "amount": 700,
            "currency": "USD",
        },
        headers={"Idempotency-Key": secrets.token_hex(8)},
    )
    assert payment.status_code == 200, payment.text
    return order, payment.json()


async def outbox_undelivered(rt: Runtime, table: sa.Table) -> int:
    async with rt.db.engine.connect() as conn:
        query = sa.select(sa.func.count()).where(table.c.delivered_at.is_(None))
        return int((await conn.execute(query)).scalar_one())


async def test_a_payment_reaches_the_order_and_the_history_through_the_streams(rt, api):
    order, payment = await paid_order(api)
    # Published, not applied in this process: the orders group has not read it yet.
    assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "open"
    transport = transport_of(rt)
    assert await transport.redis.xlen(transport.stream("payments")) >= 1
    assert await outbox_undelivered(rt, ORDERS_OUTBOX.table) == 0  # relayed
    assert await outbox_undelivered(rt, PAYMENTS_OUTBOX.table) == 0

    assert await drain(rt) > 0
    paid = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (paid["status"], paid["amount_paid"]) == ("paid", 700)
    history = (await api.get(f"/v1/customers/{order['customer_id']}/billing-history")).json()
    assert ("payment", payment["id"]) in {(h["object"], h["id"]) for h in history["data"]}
    # Every group acknowledged what it read: nothing pending, nothing left to read.
    assert all(n == 0 for n in (await transport.pending()).values())
    assert await drain(rt) == 0


class Recorder:
    """A consumer of `test.ping` events that remembers what it applied, and can fail."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.fail = False

    async def __call__(self, uow: UnitOfWork, event: Event) -> None:
        if self.fail:
            raise RuntimeError("the consumer failed")
        self.applied.append(event.id)


async def ping(rt: Runtime, count: int = 1) -> list[Event]:
    async with rt.uow() as uow:
        events = [
            await CUSTOMERS_OUTBOX.record(uow, "ten_x", "test.ping", {"n": i}, rt.clock.now())
            for i in range(count)
        ]
        await uow.commit()
    return events


async def test_an_entry_a_consumer_died_holding_is_taken_over_and_applied_once(rt):
    recorder = Recorder()
    rt.bus.subscribe("test.ping", "customers", customers_inbox, recorder)
    [event] = await ping(rt)

    # A consumer of the customers group reads it and dies before applying or acknowledging.
    transport = transport_of(rt)
    dead = StreamTransport(
        transport.redis,
        transport.groups,
        transport.services,
        consumer="dead",
        prefix=transport.prefix,
    )
    assert [e[2]["id"] for e in await dead.read("customers", claim=False)] == [event.id]
    assert await rt.bus.consume("customers") == 0  # not new any more: it is the dead one's

    await asyncio.sleep(0.15)  # longer than the claim time
    assert await rt.bus.consume("customers", claim=True) == 1
    assert recorder.applied == [event.id]
    assert (await transport.pending())[("customers", "customers")] == 0


async def test_an_event_relayed_twice_is_applied_once(rt):
    recorder = Recorder()
    rt.bus.subscribe("test.ping", "customers", customers_inbox, recorder)
    [event] = await ping(rt)
    await transport_of(rt).publish([event])  # as a relay that died before marking it relayed
    await drain(rt)
    assert recorder.applied == [event.id]


async def test_an_event_a_consumer_failed_on_stays_pending_and_is_applied_later(rt):
    recorder = Recorder()
    rt.bus.subscribe("test.ping", "customers", customers_inbox, recorder)
    recorder.fail = True
    [event] = await ping(rt)
    assert await rt.bus.consume("customers") == 1
    assert recorder.applied == []
    assert (await transport_of(rt).pending())[("customers", "customers")] == 1

    recorder.fail = False
    await asyncio.sleep(0.15)
    assert await rt.bus.consume("customers", claim=True) == 1
    assert recorder.applied == [event.id]
    assert (await transport_of(rt).pending())[("customers", "customers")] == 0


async def test_events_committed_while_redis_is_down_are_relayed_by_the_sweep(rt):
    recorder = Recorder()
    rt.bus.subscribe("test.ping", "customers", customers_inbox, recorder)
    transport = transport_of(rt)
    reachable = transport.redis
    transport.redis = type(reachable).from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        events = await ping(rt, 3)  # committed; publishing fails, and the request does not
    finally:
        await transport.redis.aclose()
        transport.redis = reachable
    assert await outbox_undelivered(rt, CUSTOMERS_OUTBOX.table) == 3

    assert await rt.bus.redeliver_pending(older_than=timedelta(0)) == 3
    assert await outbox_undelivered(rt, CUSTOMERS_OUTBOX.table) == 0
    await drain(rt)
    assert sorted(recorder.applied) == sorted(e.id for e in events)


async def test_the_sweep_trims_what_every_group_has_acknowledged(rt):
    rt.bus.subscribe("test.ping", "customers", customers_inbox, Recorder())
    await ping(rt, 5)
    transport = transport_of(rt)
    stream = transport.stream("customers")
    assert await transport.redis.xlen(stream) == 5
    await rt.bus.consume("customers")
    await rt.bus.redeliver_pending(older_than=timedelta(0))
    assert await transport.redis.xlen(stream) == 5  # three groups have not read them yet
    await drain(rt)
    await rt.bus.redeliver_pending(older_than=timedelta(0))
    assert await transport.redis.xlen(stream) <= 1  # all but the last acknowledged one


async def test_after_redis_lost_its_streams_the_recent_events_are_relayed_again(rt):
    recorder = Recorder()
    rt.bus.subscribe("test.ping", "customers", customers_inbox, recorder)
    await rt.bus.redeliver_pending(older_than=timedelta(0))  # the relay notes Redis' epoch
    events = await ping(rt, 2)
    transport = transport_of(rt)
    # Redis restarted without its data before anyone read them.
    keys = [k async for k in transport.redis.scan_iter(match=transport.prefix + "*")]
    await transport.redis.delete(*keys)

    assert await rt.bus.redeliver_pending(older_than=timedelta(0)) == 2
    await drain(rt)
    assert sorted(recorder.applied) == sorted(e.id for e in events)


async def test_a_new_subscription_is_active_at_once_without_waiting_for_events(rt, api):
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2035}
    await api.post(f"/v1/customers/{customer['id']}/payment-methods", json={"card": card})
    product = (await api.post("/v1/products", json={"name": "Pro"})).json()
    body = {"product_id": product["id"], "currency": "USD", "amount": 900, "interval": "month"}
    plan = (await api.post("/v1/plans", json=body)).json()
    created = await api.post(
        "/v1/subscriptions", json={"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert created.status_code == 200, created.text
    # The charge's answer makes it active; the order learns it is paid from the streams.
    assert created.json()["status"] == "active"
    await drain(rt)
    order = (await api.get(f"/v1/orders/{created.json()['latest_order_id']}")).json()
    assert order["status"] == "paid"
