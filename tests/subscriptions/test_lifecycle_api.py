"""Cancel with proration, reactivate, pause and resume, through the API on test clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from recur.subscriptions.proration import unused_amount

GOOD_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}


async def _active(billing, start: str, amount: int = 3000, **plan):
    clock = await billing.clock(start)
    plan = await billing.plan(amount=amount, **plan)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "active"
    return clock, customer, sub


async def test_cancel_now_with_proration_credits_the_unused_time(billing) -> None:
    # 30-day period (Apr 1 to May 1), canceled after 10 days: 20/30 of 3000 back.
    clock, customer, sub = await _active(billing, "2025-04-01T00:00:00Z")
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    ended = await billing.post(f"/v1/subscriptions/{sub['id']}/cancel", {"prorate": True})
    assert ended["status"] == "canceled"
    customer = await billing.get(f"/v1/customers/{customer['id']}")
    assert customer["balance"] == 2000
    credits = await billing.get(f"/v1/customers/{customer['id']}/credits")
    assert [(c["type"], c["amount"]) for c in credits["data"]] == [("proration", 2000)]


async def test_cancel_now_without_proration_credits_nothing(billing) -> None:
    clock, customer, sub = await _active(billing, "2025-04-01T00:00:00Z")
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await billing.post(f"/v1/subscriptions/{sub['id']}/cancel", {})
    assert (await billing.get(f"/v1/customers/{customer['id']}"))["balance"] == 0


async def test_reactivate_undoes_a_period_end_cancel(billing, api) -> None:
    clock, _, sub = await _active(billing, "2025-01-01T00:00:00Z")
    await billing.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    again = await billing.post(f"/v1/subscriptions/{sub['id']}/reactivate")
    assert (again["cancel_at_period_end"], again["canceled_at"]) == (False, None)
    await billing.advance(clock, "2025-02-02T00:00:00Z")
    renewed = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert renewed["status"] == "active"
    assert len(await billing.orders(sub["id"])) == 2
    refused = await api.post(f"/v1/subscriptions/{sub['id']}/reactivate")
    assert refused.status_code == 409


async def test_pause_stops_orders_and_resume_charges_a_new_period_at_once(billing, api) -> None:
    clock, customer, sub = await _active(billing, "2025-04-01T00:00:00Z")
    paused = await billing.post(f"/v1/subscriptions/{sub['id']}/pause")
    assert paused["status"] == "paused"
    await billing.advance(clock, "2025-07-01T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 1
    assert (await api.post(f"/v1/subscriptions/{sub['id']}/pause")).status_code == 409

    resumed = await billing.post(f"/v1/subscriptions/{sub['id']}/resume")
    assert resumed["status"] == "active"
    assert resumed["current_period_start"] == "2025-07-01T00:00:00Z"
    assert resumed["current_period_end"] == "2025-08-01T00:00:00Z"
    orders = await billing.orders(sub["id"])
    assert [o["status"] for o in orders] == ["paid", "paid"]
    assert (await billing.get(f"/v1/customers/{customer['id']}"))["balance"] == 0
    await billing.advance(clock, "2025-08-01T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 3
    assert (await api.post(f"/v1/subscriptions/{sub['id']}/resume")).status_code == 409


async def test_resume_within_the_paid_period_credits_its_rest(billing) -> None:
    clock, customer, sub = await _active(billing, "2025-04-01T00:00:00Z")
    await billing.post(f"/v1/subscriptions/{sub['id']}/pause")
    await billing.advance(clock, "2025-04-16T00:00:00Z")
    await billing.post(f"/v1/subscriptions/{sub['id']}/resume")
    # Half of April was left (15 of 30 days): 1500 credited, then spent on the new order.
    credits = await billing.get(f"/v1/customers/{customer['id']}/credits")
    assert ("proration", 1500) in [(c["type"], c["amount"]) for c in credits["data"]]


async def test_lifecycle_of_another_tenants_subscription_is_404(billing, other_tenant) -> None:
    _, _, sub = await _active(billing, "2025-04-01T00:00:00Z")
    for action in ("cancel", "reactivate", "pause", "resume"):
        response = await other_tenant.client.post(f"/v1/subscriptions/{sub['id']}/{action}")
        assert response.status_code == 404, action


@given(
    amount=st.integers(min_value=0, max_value=10**15),
    seconds=st.integers(min_value=1, max_value=400 * 86400),
    split=st.floats(min_value=0, max_value=1),
)
def test_proration_of_a_period_and_its_rest_add_up(amount: int, seconds: int, split: float) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    end = start + timedelta(seconds=seconds)
    at = start + timedelta(seconds=seconds) * split
    unused = unused_amount(amount, start, end, at)
    used = amount - unused
    assert 0 <= unused <= amount
    # Charging the unused part and crediting it back cancel out; the two parts are within one
    # minor unit of the exact shares.
    exact = amount * ((end - at) / (end - start))
    assert abs(unused - exact) <= 1
    assert used + unused == amount
    assert unused_amount(amount, start, end, start) == amount
    assert unused_amount(amount, start, end, end) == 0
