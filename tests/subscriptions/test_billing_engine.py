"""The bill run: renewals made once per (subscription, period) whatever dies or reruns."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from typer.testing import CliRunner

from recur.app import create_app
from recur.cli import app as cli
from recur.gateway.keys import create_key
from recur.kit.clock import FrozenClock
from recur.runtime import build_runtime
from recur.subscriptions import billing as engine
from recur.subscriptions import repository as repo
from recur.subscriptions.tables import subscriptions


async def _subscribe(driver, clock_at: str) -> tuple[dict, dict]:
    clock = await driver.clock(clock_at)
    plan = await driver.plan(amount=1000)
    customer = await driver.customer(test_clock_id=clock["id"])
    sub = await driver.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    return clock, sub


async def test_a_worker_dying_between_steps_loses_and_doubles_nothing(billing, runtime, tenant):
    clock, sub = await _subscribe(billing, "2025-01-01T00:00:00Z")
    now = datetime(2025, 2, 1, tzinfo=UTC)

    # Die after writing the pending period (step 1).
    billed, _ = await engine._begin_periods(runtime, tenant.id, [sub["id"]], now)
    assert [row.pending_period_start for row in billed] == [now]
    # Die after making the order (step 2), before charging it.
    drafts = await engine._order_drafts(runtime, tenant.id, billed)
    [order] = await runtime.orders.create_subscription_orders(tenant.id, drafts)
    assert order.status == "open"
    # Asked again (a rerun dying at the same point), the same order comes back.
    assert [o.id for o in await runtime.orders.create_subscription_orders(tenant.id, drafts)] == [
        order.id
    ]

    # The rerun finishes that very period: the same order, one charge.
    result = await engine.run(runtime, test_clock_id=clock["id"], now=now)
    assert (result.renewed, result.errors) == (1, 0)
    again = await engine.run(runtime, test_clock_id=clock["id"], now=now)
    assert again.processed == 0

    orders = await billing.orders(sub["id"])
    assert [o["period_start"][:10] for o in orders] == ["2025-01-01", "2025-02-01"]
    assert orders[1]["id"] == order.id
    assert orders[1]["status"] == "paid"
    payments = await billing.get("/v1/payments", order_id=order.id)
    assert [p["status"] for p in payments["data"]] == ["succeeded"]
    fresh = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert fresh["current_period_start"] == "2025-02-01T00:00:00Z"
    assert fresh["status"] == "active"


async def test_a_worker_dying_after_the_charge_charges_once(billing, runtime, tenant):
    clock, sub = await _subscribe(billing, "2025-01-01T00:00:00Z")
    now = datetime(2025, 2, 1, tzinfo=UTC)
    # Steps 1 to 3 done, then death before the subscription moved into its period.
    billed, _ = await engine._begin_periods(runtime, tenant.id, [sub["id"]], now)
    drafts = await engine._order_drafts(runtime, tenant.id, billed)
    [order] = await runtime.orders.create_subscription_orders(tenant.id, drafts)
    [charge] = await runtime.payments.charge_orders(tenant.id, [order.id])
    assert charge.outcome == "succeeded"
    # Charged again, the order answers that it is paid: no second payment.
    [again] = await runtime.payments.charge_orders(tenant.id, [order.id])
    assert again.outcome == "paid" and again.payment is None

    result = await engine.run(runtime, test_clock_id=clock["id"], now=now)
    assert (result.renewed, result.errors) == (1, 0)
    payments = await billing.get("/v1/payments", order_id=order.id)
    assert [p["status"] for p in payments["data"]] == ["succeeded"]
    fresh = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (fresh["status"], fresh["latest_order_id"]) == ("active", order.id)


async def test_a_dead_workers_lease_expires_and_the_next_run_takes_over(billing, runtime, tenant):
    clock, sub = await _subscribe(billing, "2025-01-01T00:00:00Z")
    now = datetime(2025, 2, 1, tzinfo=UTC)
    async with runtime.uow() as uow:
        claimed = await repo.claim_due(
            uow,
            now=now,
            wall_now=runtime.clock.now(),
            lease_until=runtime.clock.now() + engine.LEASE,
            test_clock_id=clock["id"],
            limit=10,
        )
        await uow.commit()
    assert [c.id for c in claimed] == [sub["id"]]
    # The claiming worker died. While its lease holds, nobody else takes the subscription...
    assert (await engine.run(runtime, test_clock_id=clock["id"], now=now)).processed == 0
    # ...and once it has run out, the next run does, once.
    async with runtime.uow() as uow:
        await uow.execute(
            sa.update(subscriptions)
            .where(subscriptions.c.id == sub["id"])
            .values(claimed_until=runtime.clock.now() - timedelta(seconds=1))
        )
        await uow.commit()
    assert (await engine.run(runtime, test_clock_id=clock["id"], now=now)).renewed == 1
    assert len(await billing.orders(sub["id"])) == 2


async def _seed_subscription_started(settings, started: datetime) -> tuple[str, str]:
    """A paid monthly subscription started at `started`, through the API."""
    rt = datetime.now(UTC) - timedelta(days=95)
    rt = build_runtime(settings, clock=FrozenClock(started))
    app = create_app(rt)
    issued = await create_key(rt.db, rt.clock, "acme")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {issued.secret}"},
    ) as api:
        product = (await api.post("/v1/products", json={"name": "Pro"})).json()
        plan = (
            await api.post(
                "/v1/plans",
                json={
                    "product_id": product["id"],
                    "currency": "USD",
                    "amount": 500,
                    "interval": "month",
                },
            )
        ).json()
        customer = (await api.post("/v1/customers", json={})).json()
        card = {"number": "4242424242424242", "exp_month": 1, "exp_year": 2099}
        await api.post(f"/v1/customers/{customer['id']}/payment-methods", json={"card": card})
        sub = (
            await api.post(
                "/v1/subscriptions",
                json={
                    "customer_id": customer["id"],
                    "plan_id": plan["id"],
                },
            )
        ).json()
        assert sub["status"] == "active"
    await rt.close()
    return issued.tenant_id, sub["id"]


def test_bill_run_command_renews_what_is_due(settings, monkeypatch) -> None:
    # A subscription started three months ago, on the real clock, is three renewals behind.
    started = datetime.now(UTC) - timedelta(days=95)
    tenant_id, sub_id = asyncio.run(_seed_subscription_started(settings, started))
    monkeypatch.setenv("RECUR_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(cli, ["bill-run"])
    assert result.exit_code == 0, result.output
    assert "renewed 3" in result.output
    rerun = CliRunner().invoke(cli, ["bill-run"])
    assert "renewed 0" in rerun.output

    async def reload():
        rt = build_runtime(settings)
        try:
            async with rt.uow() as uow:
                return await repo.get_subscription(uow, tenant_id, sub_id)
        finally:
            await rt.close()

    row = asyncio.run(reload())
    assert row.period_index == 3
    assert row.status == "active"
    assert row.current_period_start <= datetime.now(UTC) < row.current_period_end
