"""The server's own schedule, and events that survive a crash between commit and delivery."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa

from recur.app import create_app
from recur.gateway.keys import create_key
from recur.kit.clock import FrozenClock
from recur.kit.db import UnitOfWork
from recur.orders.tables import orders as orders_table
from recur.payments.service import OUTBOX as PAYMENTS_OUTBOX
from recur.runtime import build_runtime
from recur.settings import Settings

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2099}


async def _subscribe(api: httpx.AsyncClient) -> dict:
    product = (await api.post("/v1/products", json={"name": "Pro"})).json()
    plan = (
        await api.post(
            "/v1/plans",
            json={"product_id": product["id"], "currency": "USD", "amount": 900, "interval": "day"},
        )
    ).json()
    customer = (await api.post("/v1/customers", json={})).json()
    await api.post(f"/v1/customers/{customer['id']}/payment-methods", json={"card": CARD})
    return (
        await api.post(
            "/v1/subscriptions", json={"customer_id": customer["id"], "plan_id": plan["id"]}
        )
    ).json()


async def test_the_server_runs_the_bill_run_on_its_schedule(database_url: str) -> None:
    clock = FrozenClock(datetime(2025, 6, 1, tzinfo=UTC))
    settings = Settings(
        database_url=database_url,
        scheduler_enabled=True,
        bill_run_interval_seconds=0.05,
        outbox_sweep_interval_seconds=0.05,
    )
    rt = build_runtime(settings, clock=clock)
    app = create_app(rt)
    issued = await create_key(rt.db, clock, "acme")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {issued.secret}"},
        ) as api,
    ):
        sub = await _subscribe(api)
        assert sub["status"] == "active"
        clock.set(datetime(2025, 6, 3, 12, tzinfo=UTC))  # two daily periods have ended
        for _ in range(100):
            listed = await api.get("/v1/orders", params={"subscription_id": sub["id"]})
            if len(listed.json()["data"]) == 3:
                break
            await asyncio.sleep(0.05)
        starts = sorted(o["period_start"][:10] for o in listed.json()["data"])
        assert starts == ["2025-06-01", "2025-06-02", "2025-06-03"]


async def test_an_event_committed_but_never_delivered_is_delivered_once_later(runtime, api):
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    order = (
        await api.post(
            "/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "x", "unit_amount": 400}],
            },
        )
    ).json()
    assert order["status"] == "open"

    # As if the process died right after the commit: the event is in the outbox, undelivered.
    payment = {
        "id": "pay_crashed",
        "customer_id": customer["id"],
        "order_id": order["id"],
        "amount": 400,
        "currency": "USD",
        "status": "succeeded",
        "failure_code": None,
        "failure_message": None,
        "amount_refunded": 0,
        "refunded": False,
        "payment_method_id": None,
        "gateway": "sandbox",
        "gateway_reference": "ch_x",
        "description": None,
        "created": runtime.clock.now().isoformat(),
    }
    async with runtime.db.engine.connect() as conn:
        tenant_id = (
            await conn.execute(
                sa.select(orders_table.c.tenant_id).where(orders_table.c.id == order["id"])
            )
        ).scalar_one()
    async with UnitOfWork(runtime.db) as uow:  # no bus: nothing is delivered after commit
        await PAYMENTS_OUTBOX.record(
            uow, tenant_id, "payment.succeeded", payment, runtime.clock.now()
        )
        await uow.commit()
    assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "open"

    assert await runtime.bus.redeliver_pending(older_than=timedelta(0)) == 1
    assert await runtime.bus.redeliver_pending(older_than=timedelta(0)) == 0
    paid = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (paid["status"], paid["amount_paid"]) == ("paid", 400)
    history = (await api.get(f"/v1/customers/{customer['id']}/billing-history")).json()["data"]
    assert {(h["object"], h["id"]) for h in history} >= {("payment", "pay_crashed")}
