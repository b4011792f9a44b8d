"""SubscriptionsClient: the same answers and errors in-process and over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from recur.kit.errors import InvalidRequest, NotFound

from .conftest import same_error

NOW = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)


async def test_get_test_clock(clients, runtime, tenant, api) -> None:
    made = (
        await api.post("/v1/test-clocks", json={"frozen_time": NOW.isoformat(), "name": "c"})
    ).json()
    clock = await clients.subscriptions.get_test_clock(tenant.id, made["id"])
    assert clock == await runtime.subscriptions.get_test_clock(tenant.id, made["id"])
    assert clock.frozen_time == NOW
    assert clock.model_dump(mode="json") == made
    error = await same_error(
        runtime.subscriptions.get_test_clock(tenant.id, "clock_nope"),
        clients.subscriptions.get_test_clock(tenant.id, "clock_nope"),
        code="resource_missing",
    )
    assert isinstance(error, NotFound)


async def test_get_subscription(clients, runtime, tenant, api, make_customer, attach_card) -> None:
    customer = await make_customer()
    await attach_card(customer["id"])
    product = (await api.post("/v1/products", json={"name": "Pro"})).json()
    plan = (
        await api.post(
            "/v1/plans",
            json={
                "product_id": product["id"],
                "currency": "USD",
                "amount": 1999,
                "interval": "month",
            },
        )
    ).json()
    made = (
        await api.post(
            "/v1/subscriptions",
            json={"customer_id": customer["id"], "plan_id": plan["id"], "metadata": {"a": "b"}},
        )
    ).json()
    subscription = await clients.subscriptions.get_subscription(tenant.id, made["id"])
    assert subscription == await runtime.subscriptions.get_subscription(tenant.id, made["id"])
    assert subscription.status == "active"
    assert subscription.metadata == {"a": "b"}
    await same_error(
        runtime.subscriptions.get_subscription(tenant.id, "sub_nope"),
        clients.subscriptions.get_subscription(tenant.id, "sub_nope"),
        code="resource_missing",
    )


async def test_redeem_and_release_coupon(clients, runtime, tenant, api) -> None:
    coupon = (
        await api.post(
            "/v1/coupons", json={"name": "Spring", "percent_off": 12.5, "max_redemptions": 1}
        )
    ).json()
    redeemed = await clients.subscriptions.redeem_coupon(
        tenant.id, coupon["id"], "USD", NOW, "ord_first"
    )
    assert redeemed.times_redeemed == 1
    assert redeemed.percent_off == Decimal("12.5")
    # Once per redeemer; a second redeemer finds it used up.
    again = await clients.subscriptions.redeem_coupon(
        tenant.id, coupon["id"], "USD", NOW, "ord_first"
    )
    assert again.times_redeemed == 1
    error = await same_error(
        runtime.subscriptions.redeem_coupon(tenant.id, coupon["id"], "USD", NOW, "ord_second"),
        clients.subscriptions.redeem_coupon(tenant.id, coupon["id"], "USD", NOW, "ord_second"),
    )
    assert isinstance(error, InvalidRequest)

    assert await clients.subscriptions.release_coupon(tenant.id, coupon["id"], "ord_first") is None
    redeemed = await clients.subscriptions.redeem_coupon(
        tenant.id, coupon["id"], "USD", NOW, "ord_second"
    )
    assert redeemed.times_redeemed == 1

    await same_error(
        runtime.subscriptions.redeem_coupon(tenant.id, "coupon_nope", "USD", NOW, "ord_x"),
        clients.subscriptions.redeem_coupon(tenant.id, "coupon_nope", "USD", NOW, "ord_x"),
        code="resource_missing",
    )


async def test_coupon_in_another_currency(clients, runtime, tenant, api) -> None:
    coupon = (await api.post("/v1/coupons", json={"amount_off": 500, "currency": "EUR"})).json()
    await same_error(
        runtime.subscriptions.redeem_coupon(tenant.id, coupon["id"], "USD", NOW, "ord_x"),
        clients.subscriptions.redeem_coupon(tenant.id, coupon["id"], "USD", NOW, "ord_x"),
        code="currency_mismatch",
    )


async def test_get_tax_rates(clients, runtime, tenant, api) -> None:
    vat = (
        await api.post(
            "/v1/tax-rates",
            json={"display_name": "VAT", "percentage": "20.0", "inclusive": True, "country": "GB"},
        )
    ).json()
    odd = (
        await api.post(
            "/v1/tax-rates",
            json={"display_name": "Sales tax", "percentage": "7.1234", "inclusive": False},
        )
    ).json()
    rates = await clients.subscriptions.get_tax_rates(tenant.id, [odd["id"], vat["id"]])
    assert [r.id for r in rates] == [odd["id"], vat["id"]]
    # Exact percentages, through JSON and back.
    assert rates[0].percentage == Decimal("7.1234")
    assert rates == await runtime.subscriptions.get_tax_rates(tenant.id, [odd["id"], vat["id"]])
    assert await clients.subscriptions.get_tax_rates(tenant.id, []) == []
    error = await same_error(
        runtime.subscriptions.get_tax_rates(tenant.id, [vat["id"], "txr_nope"]),
        clients.subscriptions.get_tax_rates(tenant.id, [vat["id"], "txr_nope"]),
        code="resource_missing",
    )
    assert error.param == "tax_rate_ids"
