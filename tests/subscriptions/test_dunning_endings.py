"""What follows dunning, through the API on test clocks: an `unpaid` subscription whose order is
paid later renews again; a past-due subscription canceled by hand is charged no more."""

from __future__ import annotations

from typing import Any

from recur.verify import verify

GOOD_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
CHARGE_DECLINED_CARD = {**GOOD_CARD, "number": "4000000000000341"}


async def _past_due(billing: Any) -> tuple[dict, dict, dict, dict]:
    """A monthly subscription paid on Jan 1 whose Feb 1 renewal is declined."""
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan(amount=1000)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods",
        {"card": CHARGE_DECLINED_CARD, "set_default": True},
    )
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    _, renewal = await billing.orders(sub["id"])
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "past_due"
    return clock, customer, sub, renewal


async def _left_unpaid(billing: Any) -> tuple[dict, dict, dict, dict]:
    await billing.post("/v1/dunning-settings", {"final_action": "unpaid"})
    clock, customer, sub, renewal = await _past_due(billing)
    await billing.advance(clock, "2025-02-08T00:00:00Z")  # the last retry, on day 7
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "unpaid"
    assert (await billing.get(f"/v1/orders/{renewal['id']}"))["status"] == "uncollectible"
    return clock, customer, sub, renewal


async def _statuses(billing: Any, order_id: str) -> list[str]:
    page = await billing.get("/v1/payments", order_id=order_id, limit=100)
    return [p["status"] for p in reversed(page["data"])]


async def _books_are_clean(runtime: Any) -> None:
    findings = await verify(runtime.db)
    assert [(f.check, f.offenders) for f in findings if not f.ok] == []


async def test_unpaid_paid_by_hand_in_its_period_is_active_and_renews(billing, runtime) -> None:
    clock, customer, sub, renewal = await _left_unpaid(billing)
    # A new card, then the written-off order paid by hand with it.
    await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods", {"card": GOOD_CARD, "set_default": True}
    )
    paid = await billing.post("/v1/payments", {"order_id": renewal["id"]})
    assert paid["status"] == "succeeded"
    assert (await billing.get(f"/v1/orders/{renewal['id']}"))["status"] == "paid"
    active = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (active["status"], active["current_period_end"]) == ("active", "2025-03-01T00:00:00Z")

    await billing.advance(clock, "2025-03-01T00:00:00Z")
    orders = await billing.orders(sub["id"])
    assert [(o["period_start"][:10], o["status"]) for o in orders] == [
        ("2025-01-01", "paid"),
        ("2025-02-01", "paid"),
        ("2025-03-01", "paid"),
    ]
    renewed = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (renewed["status"], renewed["current_period_end"]) == (
        "active",
        "2025-04-01T00:00:00Z",
    )
    await _books_are_clean(runtime)


async def test_unpaid_paid_after_its_period_starts_a_new_period_at_once(billing, runtime) -> None:
    clock, customer, sub, renewal = await _left_unpaid(billing)
    # Unpaid renews no more: March and April are not ordered.
    await billing.advance(clock, "2025-04-10T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 2

    paid = await billing.post("/v1/payments", {"order_id": renewal["id"], "card": GOOD_CARD})
    assert paid["status"] == "succeeded"
    # Billing resumes from now, charged at once to the default card (declining, here).
    resumed = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (
        resumed["billing_cycle_anchor"],
        resumed["current_period_start"],
        resumed["current_period_end"],
    ) == ("2025-04-10T00:00:00Z", "2025-04-10T00:00:00Z", "2025-05-10T00:00:00Z")
    assert resumed["status"] == "past_due"
    orders = await billing.orders(sub["id"])
    assert [(o["period_start"][:10], o["status"]) for o in orders] == [
        ("2025-01-01", "paid"),
        ("2025-02-01", "paid"),
        ("2025-04-10", "open"),
    ]

    # A good card pays it, and the next renewal follows the new anchor.
    await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods", {"card": GOOD_CARD, "set_default": True}
    )
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "active"
    await billing.advance(clock, "2025-05-10T00:00:00Z")
    orders = await billing.orders(sub["id"])
    assert [(o["period_start"][:10], o["status"]) for o in orders][-2:] == [
        ("2025-04-10", "paid"),
        ("2025-05-10", "paid"),
    ]
    await _books_are_clean(runtime)


async def test_a_past_due_subscription_canceled_by_hand_is_charged_no_more(
    billing, runtime
) -> None:
    clock, _, sub, renewal = await _past_due(billing)
    await billing.advance(clock, "2025-02-02T00:00:00Z")  # the first retry
    assert await _statuses(billing, renewal["id"]) == ["failed", "failed"]

    await billing.advance(clock, "2025-02-03T00:00:00Z")
    canceled = await billing.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": False})
    assert canceled["status"] == "canceled"

    # The retries of days 3, 5 and 7 never come; the order stays open, still owed.
    await billing.advance(clock, "2025-03-15T00:00:00Z")
    assert await _statuses(billing, renewal["id"]) == ["failed", "failed"]
    still_owed = await billing.get(f"/v1/orders/{renewal['id']}")
    assert (still_owed["status"], still_owed["amount_due"]) == ("open", 1000)
    assert len(await billing.orders(sub["id"])) == 2

    # It can still be paid by hand; the subscription stays canceled.
    paid = await billing.post("/v1/payments", {"order_id": renewal["id"], "card": GOOD_CARD})
    assert paid["status"] == "succeeded"
    assert (await billing.get(f"/v1/orders/{renewal['id']}"))["status"] == "paid"
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "canceled"
    await _books_are_clean(runtime)


async def test_a_void_order_still_cannot_be_charged(billing) -> None:
    *_, renewal = await _past_due(billing)
    await billing.post(f"/v1/orders/{renewal['id']}/void")
    response = await billing.api.post(
        "/v1/payments", json={"order_id": renewal["id"], "card": GOOD_CARD}
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "order_not_payable"
