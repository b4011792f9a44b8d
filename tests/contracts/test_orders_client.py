"""OrdersClient: the same answers and errors in-process and over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from recur.orders.schemas import (
    DiscountTerms,
    OrderLineDraft,
    OrderTaxRate,
    SubscriptionOrderDraft,
)

from .conftest import same_error

START = datetime(2031, 1, 1, tzinfo=UTC)
END = datetime(2031, 2, 1, tzinfo=UTC)


def draft(customer_id: str, subscription_id: str, **extra) -> SubscriptionOrderDraft:
    return SubscriptionOrderDraft(
        customer_id=customer_id,
        subscription_id=subscription_id,
        currency="USD",
        period_start=START,
        period_end=END,
        lines=[OrderLineDraft(description="Pro (per month)", unit_amount=2500, quantity=2)],
        description="Pro plan",
        **extra,
    )


async def test_get_and_get_many(clients, runtime, tenant, other_tenant, make_customer, make_order):
    customer = await make_customer()
    first = await make_order(customer["id"], unit_amount=1234)
    second = await make_order(customer["id"])
    got = await clients.orders.get(tenant.id, first["id"])
    assert got == await runtime.orders.get(tenant.id, first["id"])
    assert got.model_dump(mode="json") == first
    many = await clients.orders.get_many(tenant.id, [first["id"], second["id"], "ord_nope"])
    assert set(many) == {first["id"], second["id"]}
    assert await clients.orders.get_many(tenant.id, []) == {}
    # Another tenant's order is not found.
    assert await clients.orders.get_many(other_tenant.id, [first["id"]]) == {}
    await same_error(
        runtime.orders.get(other_tenant.id, first["id"]),
        clients.orders.get(other_tenant.id, first["id"]),
        code="resource_missing",
    )


async def test_create_subscription_orders_once_per_period(clients, tenant, make_customer):
    ada = await make_customer()
    bob = await make_customer()
    made = await clients.orders.create_subscription_orders(
        tenant.id, [draft(ada["id"], "sub_ada"), draft(bob["id"], "sub_bob")]
    )
    assert [o.subscription_id for o in made] == ["sub_ada", "sub_bob"]
    assert all(o.status == "open" and o.total == 5000 for o in made)
    assert [o.number for o in made] == sorted(o.number for o in made)
    assert (made[0].period_start, made[0].period_end) == (START, END)
    # Asking again (in another order) returns the first orders, unchanged.
    again = await clients.orders.create_subscription_orders(
        tenant.id, [draft(bob["id"], "sub_bob"), draft(ada["id"], "sub_ada")]
    )
    assert again == made[::-1]
    assert await clients.orders.create_subscription_orders(tenant.id, []) == []


async def test_subscription_order_discount_tax_and_credit(clients, tenant, make_customer):
    customer = await make_customer()
    await clients.customers.grant_credit(
        tenant.id, customer["id"], 700, "USD", type_="manual", source_id="cred_order"
    )
    [order] = await clients.orders.create_subscription_orders(
        tenant.id,
        [
            draft(
                customer["id"],
                "sub_taxed",
                discount=DiscountTerms(coupon_id="coupon_x", percent_off=Decimal("12.5")),
                tax_rates=[
                    OrderTaxRate(
                        tax_rate_id="txr_x",
                        display_name="Sales tax",
                        percentage=Decimal("7.1234"),
                        inclusive=False,
                    )
                ],
            )
        ],
    )
    assert order.discount is not None and order.discount.amount == 625
    [tax] = order.tax_amounts
    assert tax.percentage == Decimal("7.1234")
    assert order.tax == tax.amount == round(4375 * Decimal("0.071234"))
    # The customer's credit paid part of it (orders asked customers, in the same batch call).
    assert order.credit_applied == 700
    assert order.amount_due == order.total - 700
    assert (await clients.customers.get(tenant.id, customer["id"])).balance == 0
