"""Dunning through the API on test clocks: a failed renewal is retried on the tenant's schedule,
and after the last failure the subscription ends (or is left unpaid) and the order is written off.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from typer.testing import CliRunner

from recur.app import create_app
from recur.cli import app as cli
from recur.gateway.keys import create_key
from recur.kit.clock import FrozenClock
from recur.runtime import build_runtime
from recur.settings import Settings
from recur.subscriptions import billing as billing_engine

from .conftest import CHARGE_DECLINED_CARD, GOOD_CARD


async def _payments(billing: Any, order_id: str) -> list[str]:
    page = await billing.get("/v1/payments", order_id=order_id, limit=100)
    return [p["status"] for p in reversed(page["data"])]


async def _renewal(billing: Any, sub: dict) -> dict:
    first, renewal = await billing.orders(sub["id"])
    assert first["status"] == "paid"
    return renewal


async def test_a_failed_renewal_is_retried_on_days_1_3_5_7_then_canceled(billing) -> None:
    clock, _, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    renewal = await _renewal(billing, sub)
    assert renewal["status"] == "open"
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "past_due"
    assert await _payments(billing, renewal["id"]) == ["failed"]

    attempts = []
    for day in range(2, 9):
        await billing.advance(clock, f"2025-02-{day:02d}T00:00:00Z")
        attempts.append(len(await _payments(billing, renewal["id"])))
        state = await billing.get(f"/v1/subscriptions/{sub['id']}")
        assert state["status"] == ("canceled" if day == 8 else "past_due"), day
    # The renewal's charge, then one retry on each of days 1, 3, 5 and 7 after it.
    assert attempts == [2, 2, 3, 3, 4, 4, 5]
    assert await _payments(billing, renewal["id"]) == ["failed"] * 5

    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert ended["ended_at"] == "2025-02-08T00:00:00Z"
    assert ended["canceled_at"] == "2025-02-08T00:00:00Z"
    order = await billing.get(f"/v1/orders/{renewal['id']}")
    assert order["status"] == "uncollectible"
    assert order["marked_uncollectible_at"] is not None

    # Nothing more: no retry, no renewal.
    await billing.advance(clock, "2025-04-01T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 2
    assert len(await _payments(billing, renewal["id"])) == 5


async def test_advancing_months_at_once_interleaves_retries_and_renewals(billing) -> None:
    clock, _, sub = await billing.renewal_will_fail("2025-01-15T00:00:00Z")
    await billing.advance(clock, "2025-04-20T00:00:00Z")
    # Feb 15 fails, retries on Feb 16, 18, 20 and 22 exhaust it: no Mar 15 or Apr 15 renewal.
    orders = await billing.orders(sub["id"])
    assert [(o["period_start"][:10], o["status"]) for o in orders] == [
        ("2025-01-15", "paid"),
        ("2025-02-15", "uncollectible"),
    ]
    assert await _payments(billing, orders[1]["id"]) == ["failed"] * 5
    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (ended["status"], ended["ended_at"]) == ("canceled", "2025-02-22T00:00:00Z")
    assert (await billing.get(f"/v1/test-clocks/{clock['id']}"))["frozen_time"] == (
        "2025-04-20T00:00:00Z"
    )


async def test_a_weekly_plan_ends_before_its_next_renewal_due_at_the_last_retry(billing) -> None:
    # The last retry (day 7) and the next weekly renewal fall at the same time: the retry
    # comes first, so the subscription is canceled and not renewed.
    clock, _, sub = await billing.renewal_will_fail(interval="week")
    await billing.advance(clock, "2025-03-01T00:00:00Z")
    orders = await billing.orders(sub["id"])
    assert [(o["period_start"][:10], o["status"]) for o in orders] == [
        ("2025-01-01", "paid"),
        ("2025-01-08", "uncollectible"),
    ]
    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (ended["status"], ended["ended_at"]) == ("canceled", "2025-01-15T00:00:00Z")


async def test_a_daily_plan_past_due_for_the_whole_schedule_is_canceled(billing) -> None:
    # Each day's renewal fails too, so the order running out of retries is never the latest.
    clock, _, sub = await billing.renewal_will_fail(interval="day")
    await billing.advance(clock, "2025-01-20T00:00:00Z")
    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (ended["status"], ended["ended_at"]) == ("canceled", "2025-01-09T00:00:00Z")
    orders = await billing.orders(sub["id"])
    assert [o["period_start"][:10] for o in orders] == [f"2025-01-{d:02d}" for d in range(1, 9)]
    # Each unpaid day was retried through its own schedule, then written off.
    assert [o["status"] for o in orders] == ["paid"] + ["uncollectible"] * 7


async def test_unpaid_setting_keeps_the_subscription_without_further_renewals(billing) -> None:
    await billing.post("/v1/dunning-settings", {"final_action": "unpaid"})
    clock, _, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-08T00:00:00Z")
    unpaid = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert unpaid["status"] == "unpaid"
    assert unpaid["ended_at"] is None
    renewal = await _renewal(billing, sub)
    assert renewal["status"] == "uncollectible"

    await billing.advance(clock, "2025-05-01T00:00:00Z")
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "unpaid"
    assert len(await billing.orders(sub["id"])) == 2
    assert len(await _payments(billing, renewal["id"])) == 5


async def test_a_custom_schedule(billing) -> None:
    await billing.post("/v1/dunning-settings", {"retry_days": [2, 4]})
    clock, _, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    renewal = await _renewal(billing, sub)
    counts = []
    for day in range(2, 7):
        await billing.advance(clock, f"2025-02-{day:02d}T00:00:00Z")
        counts.append(len(await _payments(billing, renewal["id"])))
    assert counts == [1, 2, 2, 3, 3]
    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (ended["status"], ended["ended_at"]) == ("canceled", "2025-02-05T00:00:00Z")
    assert (await billing.get(f"/v1/orders/{renewal['id']}"))["status"] == "uncollectible"


async def test_a_good_card_made_default_is_tried_at_once(billing) -> None:
    clock, customer, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-04T00:00:00Z")  # the renewal, then days 1 and 3
    renewal = await _renewal(billing, sub)
    assert await _payments(billing, renewal["id"]) == ["failed"] * 3

    good = await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods", {"card": GOOD_CARD, "set_default": True}
    )
    assert await _payments(billing, renewal["id"]) == ["failed"] * 3 + ["succeeded"]
    paid = await billing.get(f"/v1/orders/{renewal['id']}")
    assert paid["status"] == "paid"
    active = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert active["status"] == "active"
    page = await billing.get("/v1/payments", order_id=renewal["id"])
    assert page["data"][0]["payment_method_id"] == good["id"]

    await billing.advance(clock, "2025-02-28T00:00:00Z")
    assert len(await _payments(billing, renewal["id"])) == 4
    await billing.advance(clock, "2025-03-01T00:00:00Z")
    assert [o["status"] for o in await billing.orders(sub["id"])] == ["paid", "paid", "paid"]


async def test_a_default_changed_on_the_customer_is_tried_at_once(billing) -> None:
    clock, customer, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-02T00:00:00Z")
    renewal = await _renewal(billing, sub)
    # Attached but not the default: nothing happens yet.
    good = await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods", {"card": GOOD_CARD}
    )
    assert await _payments(billing, renewal["id"]) == ["failed", "failed"]
    # Made the default through the customer: its `customer.updated` event retries at once.
    await billing.post(f"/v1/customers/{customer['id']}", {"default_payment_method_id": good["id"]})
    assert await _payments(billing, renewal["id"]) == ["failed", "failed", "succeeded"]
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "active"


async def test_a_new_card_that_declines_too_counts_and_the_schedule_goes_on(billing) -> None:
    clock, customer, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-04T12:00:00Z")  # the renewal, then days 1 and 3
    renewal = await _renewal(billing, sub)
    await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods",
        {"card": CHARGE_DECLINED_CARD, "set_default": True},
    )
    # Tried at once (the third retry), so the next is the fourth, on day 7.
    assert len(await _payments(billing, renewal["id"])) == 4
    await billing.advance(clock, "2025-02-07T00:00:00Z")
    assert len(await _payments(billing, renewal["id"])) == 4
    await billing.advance(clock, "2025-02-08T00:00:00Z")
    assert len(await _payments(billing, renewal["id"])) == 5
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "canceled"


async def test_a_renewal_without_a_card_is_retried_when_one_is_added(billing) -> None:
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan()
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    [card] = (await billing.get(f"/v1/customers/{customer['id']}/payment-methods"))["data"]
    response = await billing.api.delete(
        f"/v1/customers/{customer['id']}/payment-methods/{card['id']}"
    )
    assert response.status_code == 200
    await billing.advance(clock, "2025-02-03T00:00:00Z")
    renewal = await _renewal(billing, sub)
    assert renewal["status"] == "open"
    assert await _payments(billing, renewal["id"]) == []  # no card, nothing to record

    await billing.post(f"/v1/customers/{customer['id']}/payment-methods", {"card": GOOD_CARD})
    assert await _payments(billing, renewal["id"]) == ["succeeded"]
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "active"


async def test_an_order_paid_another_way_is_not_charged_again(billing) -> None:
    clock, _, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    renewal = await _renewal(billing, sub)
    paid = await billing.post("/v1/payments", {"order_id": renewal["id"], "card": {**GOOD_CARD}})
    assert paid["status"] == "succeeded"
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "active"
    await billing.advance(clock, "2025-02-20T00:00:00Z")
    assert await _payments(billing, renewal["id"]) == ["failed", "succeeded"]
    assert (await billing.get(f"/v1/orders/{renewal['id']}"))["status"] == "paid"


async def test_a_failed_first_charge_is_not_dunned(billing) -> None:
    # Never paid: incomplete, ending with its first period, as before; no retries.
    clock = await billing.clock("2025-05-01T00:00:00Z")
    plan = await billing.plan()
    customer = await billing.customer(card=CHARGE_DECLINED_CARD, test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "incomplete"
    await billing.advance(clock, "2025-05-20T00:00:00Z")
    [order] = await billing.orders(sub["id"])
    assert (order["status"], await _payments(billing, order["id"])) == ("open", ["failed"])


async def test_retries_never_charge_twice(billing, runtime, tenant) -> None:
    clock, _, sub = await billing.renewal_will_fail()
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    renewal = await _renewal(billing, sub)
    due = datetime(2025, 2, 2, tzinfo=UTC)
    assert await runtime.payments.next_retry_due(tenant.id, clock["id"], due) == due

    results = await asyncio.gather(
        runtime.payments.run_due_retries(tenant.id, due, clock["id"]),
        runtime.payments.run_due_retries(tenant.id, due, clock["id"]),
    )
    again = await runtime.payments.run_due_retries(tenant.id, due, clock["id"])
    assert sorted(r.failed for r in results) == [0, 1]
    assert again.processed == 0
    assert await _payments(billing, renewal["id"]) == ["failed", "failed"]
    # Not due again before day 3, and other clocks and tenants see nothing of it.
    assert await runtime.payments.next_retry_due(tenant.id, clock["id"], due) is None
    assert (await runtime.payments.run_due_retries(None, due, None)).processed == 0
    assert (await runtime.payments.run_due_retries("other", due, clock["id"])).processed == 0


async def _serve(settings: Settings, clock: FrozenClock):  # type: ignore[no-untyped-def]
    rt = build_runtime(settings, clock=clock)
    app = create_app(rt)
    issued = await create_key(rt.db, clock, "acme")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {issued.secret}"},
    )
    return rt, app, client


async def _failing_renewal_on_the_real_clock(api: httpx.AsyncClient) -> dict:
    async def post(path: str, body: dict) -> dict:
        response = await api.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    product = await post("/v1/products", {"name": "Pro"})
    plan = await post(
        "/v1/plans",
        {"product_id": product["id"], "currency": "USD", "amount": 800, "interval": "month"},
    )
    customer = await post("/v1/customers", {})
    cards = f"/v1/customers/{customer['id']}/payment-methods"
    await post(cards, {"card": GOOD_CARD})
    sub = await post("/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]})
    assert sub["status"] == "active"
    await post(cards, {"card": CHARGE_DECLINED_CARD, "set_default": True})
    return sub


async def test_the_server_retries_on_its_schedule(database_url: str) -> None:
    clock = FrozenClock(datetime(2025, 6, 1, tzinfo=UTC))
    settings = Settings(
        database_url=database_url,
        scheduler_enabled=True,
        bill_run_interval_seconds=0.05,
        outbox_sweep_interval_seconds=0.05,
    )
    _, app, api = await _serve(settings, clock)
    async with app.router.lifespan_context(app), api:
        sub = await _failing_renewal_on_the_real_clock(api)
        clock.set(datetime(2025, 7, 1, 1, tzinfo=UTC))  # the renewal falls due, and fails
        renewal = await _wait_for_payments(api, sub["id"], 1)
        clock.set(datetime(2025, 7, 2, 2, tzinfo=UTC))  # a day later: the first retry
        renewal = await _wait_for_payments(api, sub["id"], 2)
        assert renewal["status"] == "open"


async def _wait_for_payments(api: httpx.AsyncClient, sub_id: str, count: int) -> dict:
    for _ in range(200):
        orders = (await api.get("/v1/orders", params={"subscription_id": sub_id})).json()["data"]
        if len(orders) == 2:
            page = await api.get("/v1/payments", params={"order_id": orders[0]["id"]})
            if len(page.json()["data"]) >= count:
                assert len(page.json()["data"]) == count
                return orders[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {count} payments on the renewal")


def test_bill_run_command_runs_the_due_retries(settings: Settings, monkeypatch) -> None:
    # A renewal that failed two days ago, on the real clock: its first retry is due.
    failed_at = datetime.now(UTC) - timedelta(days=2)

    async def seed() -> str:
        clock = FrozenClock(failed_at - timedelta(days=31))
        rt, _, api = await _serve(settings, clock)
        async with api:
            sub = await _failing_renewal_on_the_real_clock(api)
        clock.set(failed_at)
        result = await billing_engine.run(rt)
        assert result.failed == 1
        await rt.close()
        return sub["id"]

    asyncio.run(seed())
    monkeypatch.setenv("RECUR_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(cli, ["bill-run"])
    assert result.exit_code == 0, result.output
    assert "retries due 1: recovered 0, failed again 1, exhausted 0" in result.output
    rerun = CliRunner().invoke(cli, ["bill-run"])
    assert "retries due 0" in rerun.output


async def test_a_failed_charge_at_trial_end_is_dunned(billing) -> None:
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan(trial_days=14)
    customer = await billing.customer(card=CHARGE_DECLINED_CARD, test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "trialing"
    await billing.advance(clock, "2025-01-15T00:00:00Z")
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "past_due"
    await billing.advance(clock, "2025-03-01T00:00:00Z")
    [order] = await billing.orders(sub["id"])
    assert order["status"] == "uncollectible"
    assert await _payments(billing, order["id"]) == ["failed"] * 5
    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (ended["status"], ended["ended_at"]) == ("canceled", "2025-01-22T00:00:00Z")
