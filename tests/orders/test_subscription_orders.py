"""Orders of subscription periods, made by the billing engine through `rt.orders`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from recur.kit.errors import InvalidRequest
from recur.orders.schemas import OrderLineDraft, SubscriptionOrderDraft

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 2, 1, tzinfo=UTC)


def draft(
    customer_id: str,
    subscription_id: str = "sub_1",
    start: datetime = START,
    end: datetime = END,
    unit_amount: int = 2500,
) -> SubscriptionOrderDraft:
    return SubscriptionOrderDraft(
        customer_id=customer_id,
        subscription_id=subscription_id,
        currency="usd",
        period_start=start,
        period_end=end,
        lines=[OrderLineDraft(description="Pro (per month)", unit_amount=unit_amount, quantity=2)],
        description="Pro plan",
    )


async def make_one(runtime, tenant_id: str, one: SubscriptionOrderDraft):
    [order] = await runtime.orders.create_subscription_orders(tenant_id, [one])
    return order


async def test_subscription_order_is_finalized_with_subscription_lines(
    api, tenant, runtime, make_customer
) -> None:
    customer = await make_customer(currency="USD")
    order = await make_one(runtime, tenant.id, draft(customer["id"]))
    assert order.status == "open"
    assert order.number == 1
    assert order.currency == "USD"
    assert order.subscription_id == "sub_1"
    assert (order.period_start, order.period_end) == (START, END)
    assert order.total == order.subtotal == order.amount_due == 5000
    [line] = order.lines
    assert (line.kind, line.quantity, line.unit_amount, line.amount) == (
        "subscription",
        2,
        2500,
        5000,
    )
    # A line without a period of its own carries the order's.
    assert (line.period_start, line.period_end) == (START, END)

    listed = (await api.get("/v1/orders", params={"subscription_id": "sub_1"})).json()["data"]
    assert [o["id"] for o in listed] == [order.id]


async def test_subscription_order_is_made_once_per_period(
    api, tenant, runtime, make_customer
) -> None:
    customer = await make_customer(currency="USD")
    first = await make_one(runtime, tenant.id, draft(customer["id"]))
    # A rerun (even with other lines) returns the first order unchanged.
    again = await make_one(runtime, tenant.id, draft(customer["id"], unit_amount=9999))
    assert again == first
    orders = (await api.get("/v1/orders")).json()["data"]
    assert [o["id"] for o in orders] == [first.id]

    # The next period is a new order with the next number.
    second = await make_one(
        runtime, tenant.id, draft(customer["id"], start=END, end=datetime(2025, 3, 1, tzinfo=UTC))
    )
    assert second.id != first.id
    assert second.number == 2


async def test_concurrent_duplicates_return_one_order(api, tenant, runtime, make_customer) -> None:
    customer = await make_customer(currency="USD")
    results = await asyncio.gather(
        *(make_one(runtime, tenant.id, draft(customer["id"])) for _ in range(4))
    )
    assert len({order.id for order in results}) == 1
    assert results[0].number == 1
    orders = (await api.get("/v1/orders")).json()["data"]
    assert len(orders) == 1
    # No number was lost to the losers: the next order is 2.
    response = await api.post(
        "/v1/orders",
        json={"customer_id": customer["id"], "lines": [{"description": "x", "unit_amount": 1}]},
    )
    assert response.json()["number"] == 2


async def test_zero_period_is_paid_at_once(tenant, runtime, make_customer) -> None:
    customer = await make_customer(currency="USD")
    order = await make_one(runtime, tenant.id, draft(customer["id"], unit_amount=0))
    assert order.status == "paid"
    assert order.paid_at is not None


async def test_negative_total_is_refused(api, tenant, runtime, make_customer) -> None:
    customer = await make_customer(currency="USD")
    with pytest.raises(InvalidRequest) as caught:
        await make_one(runtime, tenant.id, draft(customer["id"], unit_amount=-1))
    assert caught.value.param == "lines"
    assert (await api.get("/v1/orders")).json()["data"] == []


async def test_get_through_the_client(tenant, other_tenant, runtime, make_customer) -> None:
    from recur.kit.errors import NotFound

    customer = await make_customer(currency="USD")
    order = await make_one(runtime, tenant.id, draft(customer["id"]))
    assert await runtime.orders.get(tenant.id, order.id) == order
    with pytest.raises(NotFound):
        await runtime.orders.get(other_tenant.id, order.id)


async def test_a_batch_numbers_its_new_orders_in_a_row_and_keeps_the_old_ones(
    api, tenant, runtime, make_customer
) -> None:
    customer = await make_customer(currency="USD")
    first = await make_one(runtime, tenant.id, draft(customer["id"], subscription_id="sub_a"))
    drafts = [
        draft(customer["id"], subscription_id="sub_b"),
        draft(customer["id"], subscription_id="sub_a"),  # made before: returned as it is
        draft(customer["id"], subscription_id="sub_c", unit_amount=0),
    ]
    batch = await runtime.orders.create_subscription_orders(tenant.id, drafts)
    assert [o.subscription_id for o in batch] == ["sub_b", "sub_a", "sub_c"]
    assert batch[1] == first
    assert sorted(o.number for o in batch) == [1, 2, 3]
    assert [o.status for o in batch] == ["open", "open", "paid"]
    again = await runtime.orders.create_subscription_orders(tenant.id, drafts)
    assert [o.id for o in again] == [o.id for o in batch]
    listed = (await api.get("/v1/orders")).json()["data"]
    assert len(listed) == 3
