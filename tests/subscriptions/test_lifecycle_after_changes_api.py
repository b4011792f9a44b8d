"""Cancel and resume of subscriptions that changed plan or quantity, through the API on test
clocks: the credit for unused time is what was paid for it, and prorations not yet billed are
settled (or dropped) when the subscription ends, once, even if the process dies on the way."""

from __future__ import annotations

from typing import Any

import pytest

from recur.subscriptions import changes
from recur.subscriptions import repository as repo
from recur.verify import verify

from .conftest import CHARGE_DECLINED_CARD

APRIL = "2025-04-01T00:00:00Z"  # April has 30 days: a day is 1/30 of the period


async def _subscribe(billing, plan: dict[str, Any], start: str = APRIL) -> tuple[dict, dict, dict]:
    clock = await billing.clock(start)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "active"
    return clock, customer, sub


async def _change(billing, sub: dict, **body: Any) -> dict[str, Any]:
    return await billing.post(f"/v1/subscriptions/{sub['id']}/change", body)


async def _cancel(billing, sub: dict, **body: Any) -> dict[str, Any]:
    return await billing.post(f"/v1/subscriptions/{sub['id']}/cancel", body)


def _lines(order: dict[str, Any]) -> list[tuple[str, int]]:
    return [(line["description"], line["amount"]) for line in order["lines"]]


async def _balance(billing, customer: dict) -> int:
    return (await billing.get(f"/v1/customers/{customer['id']}"))["balance"]


async def _credits(billing, customer: dict) -> list[tuple[str, int]]:
    page = await billing.get(f"/v1/customers/{customer['id']}/credits")
    return [(c["type"], c["amount"]) for c in page["data"]]


async def _books_balance(runtime) -> None:
    """`recur verify` finds nothing wrong."""
    assert [f for f in await verify(runtime.db) if f.offenders] == []


async def _upgraded_then_canceled(billing) -> tuple[dict, dict, dict]:
    """Basic (3000) to Pro (6000) on Apr 11, its prorations pending; ended on Apr 26."""
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"])  # -2000 for Basic, +4000 for Pro
    await billing.advance(clock, "2025-04-26T00:00:00Z")
    return clock, customer, sub


# --- cancel now: the prorations not yet billed -----------------------------------------------


async def test_cancel_with_proration_orders_and_charges_the_net_of_pending_prorations(
    billing, runtime
) -> None:
    clock, customer, sub = await _upgraded_then_canceled(billing)
    ended = await _cancel(billing, sub, prorate=True)
    assert ended["status"] == "canceled"

    # 3000 paid for April; 10 days of Basic (1000) and 15 of Pro (3000) used: 1000 more, in a
    # final order: the change's two lines and the credit for the 5 days of Pro left.
    _, final = await billing.orders(sub["id"])
    assert _lines(final) == [
        ("Unused time on Basic after 2025-04-11 00:00 UTC", -2000),
        ("Remaining time on Pro after 2025-04-11 00:00 UTC", 4000),
        ("Unused time on Pro after 2025-04-26 00:00 UTC", -1000),
    ]
    assert (final["total"], final["status"]) == (1000, "paid")
    assert (final["period_start"], final["period_end"]) == (
        "2025-04-26T00:00:00Z",
        "2025-05-01T00:00:00Z",
    )
    payments = await billing.get("/v1/payments", order_id=final["id"])
    assert [(p["status"], p["amount"]) for p in payments["data"]] == [("succeeded", 1000)]
    assert await _balance(billing, customer) == 0

    # Nothing more is ever ordered.
    await billing.advance(clock, "2025-07-01T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 2
    await _books_balance(runtime)


async def test_cancel_with_proration_credits_the_net_of_pending_prorations_with_tax(
    billing, runtime
) -> None:
    pro = await billing.plan(product="Pro", amount=6000)
    basic = await billing.plan(product="Basic", amount=3000)
    vat = await billing.post(
        "/v1/tax-rates", {"display_name": "VAT", "percentage": 20, "inclusive": False}
    )
    clock = await billing.clock(APRIL)
    customer = await billing.customer(test_clock_id=clock["id"])
    await billing.api.patch(f"/v1/customers/{customer['id']}", json={"tax_rate_ids": [vat["id"]]})
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": pro["id"]}
    )
    assert (await billing.orders(sub["id"]))[0]["total"] == 7200
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=basic["id"])  # -4000 for Pro, +2000 for Basic
    await billing.advance(clock, "2025-04-21T00:00:00Z")

    await _cancel(billing, sub, prorate=True)
    # 6000 paid before tax; 10 days of Pro (2000) and 10 of Basic (1000) used: 3000 back, and
    # the 600 of tax paid on it. No order.
    assert len(await billing.orders(sub["id"])) == 1
    assert await _balance(billing, customer) == 3600
    assert await _credits(billing, customer) == [("proration", 3600)]
    await billing.advance(clock, "2025-06-01T00:00:00Z")
    assert await _balance(billing, customer) == 3600
    await _books_balance(runtime)


async def test_cancel_at_the_instant_of_a_change_credits_what_a_cancel_alone_would(
    billing, runtime
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"])
    await _cancel(billing, sub, prorate=True)
    # The change's charge is credited back whole: 20 days of Basic, as without the change.
    assert len(await billing.orders(sub["id"])) == 1
    assert await _balance(billing, customer) == 2000
    await _books_balance(runtime)


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
async def test_cancel_without_proration_drops_pending_prorations(
    billing, runtime, direction
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    first, then = (basic, pro) if direction == "upgrade" else (pro, basic)
    clock, customer, sub = await _subscribe(billing, first)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=then["id"])
    await billing.advance(clock, "2025-04-21T00:00:00Z")

    await _cancel(billing, sub)
    # What was paid for April stands: nothing charged, nothing credited, now or later.
    await billing.advance(clock, "2025-07-01T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 1
    assert await _balance(billing, customer) == 0
    await _books_balance(runtime)


async def test_a_declined_final_order_stays_open_and_is_not_retried(billing, runtime) -> None:
    clock, customer, sub = await _upgraded_then_canceled(billing)
    await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods",
        {"card": CHARGE_DECLINED_CARD, "set_default": True},
    )
    await _cancel(billing, sub, prorate=True)
    _, final = await billing.orders(sub["id"])
    assert (final["status"], final["amount_due"]) == ("open", 1000)

    # A canceled subscription is charged no more: the order waits to be paid by hand.
    await billing.advance(clock, "2025-05-15T00:00:00Z")
    payments = await billing.get("/v1/payments", order_id=final["id"])
    assert [p["status"] for p in payments["data"]] == ["failed"]
    assert (await billing.get(f"/v1/orders/{final['id']}"))["status"] == "open"
    await _books_balance(runtime)


async def test_a_cancel_that_dies_before_settling_is_settled_by_the_bill_run_once(
    billing, runtime, tenant, monkeypatch
) -> None:
    clock, customer, sub = await _upgraded_then_canceled(billing)
    settle = changes.settle_pending_invoice

    async def dies(*_args: Any) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(changes, "settle_pending_invoice", dies)
        ended = await _cancel(billing, sub, prorate=True)
    assert ended["status"] == "canceled"
    assert len(await billing.orders(sub["id"])) == 1
    assert changes.settle_pending_invoice is settle

    await billing.advance(clock, "2025-04-27T00:00:00Z")
    _, final = await billing.orders(sub["id"])
    assert (final["total"], final["status"]) == (1000, "paid")
    async with runtime.uow() as uow:
        row = await repo.get_subscription(uow, tenant.id, sub["id"])
    assert (row.pending_invoice_at, row.next_action_at) == (None, None)  # due no more
    await billing.advance(clock, "2025-07-01T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 2
    assert await _balance(billing, customer) == 0
    await _books_balance(runtime)


# --- cancel now: the credit for unused time after a change in an earlier period ---------------


async def test_cancel_after_a_renewal_that_carried_prorations_credits_the_period_only(
    billing, runtime
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic, start="2025-05-01T00:00:00Z")
    await billing.advance(clock, "2025-05-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"])
    await billing.advance(clock, "2025-06-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    # June's Pro, and May's prorations (21 of 31 days): 3000 x 21/31 back, 6000 x 21/31 owed.
    assert [line["amount"] for line in renewal["lines"]] == [6000, -2032, 4065]
    assert (renewal["total"], renewal["status"]) == (8033, "paid")

    await billing.advance(clock, "2025-06-16T00:00:00Z")
    await _cancel(billing, sub, prorate=True)
    # Half of June's Pro (6000) back; May's prorations were for May.
    assert await _balance(billing, customer) == 3000
    assert len(await billing.orders(sub["id"])) == 2
    await _books_balance(runtime)


async def test_cancel_after_a_renewal_paid_by_prorated_credit_credits_its_unused_time(
    billing, runtime
) -> None:
    pro = await billing.plan(product="Pro", amount=6000)
    basic = await billing.plan(product="Basic", amount=1000)
    clock, customer, sub = await _subscribe(billing, pro)
    await billing.advance(clock, "2025-04-02T00:00:00Z")
    await _change(billing, sub, plan_id=basic["id"])
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    # May's Basic was paid by April's credit: an order of 0, the rest on the balance.
    assert (renewal["total"], renewal["status"]) == (0, "paid")
    assert await _balance(billing, customer) == 3833

    await billing.advance(clock, "2025-05-17T00:00:00Z")
    await _cancel(billing, sub, prorate=True)
    # 15 of May's 31 days of Basic left: 1000 x 15/31 = 483.87 back.
    assert await _balance(billing, customer) == 3833 + 484
    await _books_balance(runtime)


async def test_cancel_after_a_change_invoiced_now_credits_what_the_change_charged(
    billing, runtime
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"], proration_behavior="always_invoice")
    await billing.advance(clock, "2025-04-21T00:00:00Z")
    await _cancel(billing, sub, prorate=True)
    # Paid 3000 + 2000; used 10 days of Basic (1000) and 10 of Pro (2000): 2000 back.
    assert [o["total"] for o in await billing.orders(sub["id"])] == [3000, 2000]
    assert await _balance(billing, customer) == 2000
    await _books_balance(runtime)


async def test_cancel_with_a_percentage_coupon_credits_what_was_paid(billing, runtime) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    coupon = await billing.post("/v1/coupons", {"percent_off": 50, "duration": "forever"})
    clock = await billing.clock(APRIL)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions",
        {"customer_id": customer["id"], "plan_id": basic["id"], "coupon_id": coupon["id"]},
    )
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"])
    await billing.advance(clock, "2025-04-26T00:00:00Z")
    await _cancel(billing, sub, prorate=True)
    # As without the coupon, at half the price: 500 more, once discounted.
    _, final = await billing.orders(sub["id"])
    assert [line["amount"] for line in final["lines"]] == [-2000, 4000, -1000]
    assert (final["subtotal"], final["discount"]["amount"], final["total"]) == (1000, 500, 500)
    assert final["status"] == "paid"
    await _books_balance(runtime)


# --- resume ----------------------------------------------------------------------------------


async def test_resume_after_a_change_credits_what_the_change_charged_and_bills_its_items(
    billing, runtime
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"])
    await billing.advance(clock, "2025-04-16T00:00:00Z")
    await billing.post(f"/v1/subscriptions/{sub['id']}/pause")
    await billing.advance(clock, "2025-04-21T00:00:00Z")

    resumed = await billing.post(f"/v1/subscriptions/{sub['id']}/resume")
    assert (resumed["status"], resumed["current_period_start"]) == (
        "active",
        "2025-04-21T00:00:00Z",
    )
    # 10 of the 20 days of Pro the change charged were left: 2000 credited, spent at once on
    # the new period's order, which carries the change's prorations.
    assert sorted(await _credits(billing, customer)) == [
        ("applied_to_order", -2000),
        ("proration", 2000),
    ]
    _, first = await billing.orders(sub["id"])
    assert _lines(first) == [
        ("Pro (per month)", 6000),
        ("Unused time on Basic after 2025-04-11 00:00 UTC", -2000),
        ("Remaining time on Pro after 2025-04-11 00:00 UTC", 4000),
    ]
    assert (first["total"], first["credit_applied"], first["status"]) == (8000, 2000, "paid")
    assert await _balance(billing, customer) == 0

    await billing.advance(clock, "2025-05-21T00:00:00Z")
    assert _lines((await billing.orders(sub["id"]))[-1]) == [("Pro (per month)", 6000)]
    await _books_balance(runtime)


async def test_resume_after_a_change_with_a_percentage_coupon_credits_what_was_paid(
    billing, runtime
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    coupon = await billing.post("/v1/coupons", {"percent_off": 50, "duration": "forever"})
    clock = await billing.clock(APRIL)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions",
        {"customer_id": customer["id"], "plan_id": basic["id"], "coupon_id": coupon["id"]},
    )
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"])
    await billing.advance(clock, "2025-04-16T00:00:00Z")
    await billing.post(f"/v1/subscriptions/{sub['id']}/pause")
    await billing.advance(clock, "2025-04-21T00:00:00Z")
    await billing.post(f"/v1/subscriptions/{sub['id']}/resume")
    # The change charged 4000 for 20 days of Pro, at half price: 10 days left are worth 1000.
    assert ("proration", 1000) in await _credits(billing, customer)
    _, first = await billing.orders(sub["id"])
    assert (first["subtotal"], first["total"], first["credit_applied"]) == (8000, 4000, 1000)
    # Paid 1500 + 3000: 10 days of Basic (500), 10 of Pro (1000) and a month of Pro (3000).
    assert await _balance(billing, customer) == 0
    await _books_balance(runtime)


async def test_resume_takes_a_change_scheduled_for_the_paused_period_end(billing, runtime) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic)
    await _change(billing, sub, plan_id=pro["id"], effective="period_end")
    await billing.post(f"/v1/subscriptions/{sub['id']}/pause")
    await billing.advance(clock, "2025-05-11T00:00:00Z")

    resumed = await billing.post(f"/v1/subscriptions/{sub['id']}/resume")
    assert (resumed["plan_id"], resumed["pending_change"]) == (pro["id"], None)
    assert _lines((await billing.orders(sub["id"]))[-1]) == [("Pro (per month)", 6000)]
    assert await _balance(billing, customer) == 0
    await _books_balance(runtime)


async def test_an_end_at_period_end_bills_the_prorations_still_pending(billing, runtime) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"])  # -2000 for Basic, +4000 for Pro
    await _cancel(billing, sub, at_period_end=True)
    await billing.advance(clock, "2025-05-02T00:00:00Z")

    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert ended["status"] == "canceled"
    # No May period; the change's two lines, billed with the end, net 2000, charged.
    _, final = await billing.orders(sub["id"])
    assert sum(amount for _, amount in _lines(final)) == 2000
    assert (final["status"], final["total"]) == ("paid", 2000)
    assert await _balance(billing, customer) == 0
    # Nothing is due any more, and a second run bills nothing twice.
    await billing.advance(clock, "2025-06-02T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 2
    await _books_balance(runtime)
