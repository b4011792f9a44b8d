"""Coupons and tax rates: the catalog's endpoints, and their discounts on subscription orders
across renewals on a test clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from recur.kit.errors import InvalidRequest

PERCENT = {"name": "Spring", "percent_off": 25, "duration": "forever"}


async def coupon(billing, **fields: Any) -> dict[str, Any]:
    return await billing.post("/v1/coupons", {**PERCENT, **fields})


async def subscribe(billing, customer, plan, **fields: Any) -> dict[str, Any]:
    return await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"], **fields}
    )


def discounts(orders: list[dict[str, Any]]) -> list[int | None]:
    return [o["discount"]["amount"] if o["discount"] else None for o in orders]


# --- the catalog ----------------------------------------------------------------------------


async def test_create_get_and_list_coupons(billing, api) -> None:
    percent = await coupon(billing, percent_off=12.5, max_redemptions=3)
    assert percent["id"].startswith("coupon_")
    assert percent["object"] == "coupon"
    assert (percent["percent_off"], percent["amount_off"], percent["currency"]) == (
        12.5,
        None,
        None,
    )
    assert (percent["duration"], percent["duration_in_months"]) == ("forever", None)
    assert (percent["max_redemptions"], percent["times_redeemed"]) == (3, 0)
    assert percent["redeem_by"] is None

    amount = await billing.post(
        "/v1/coupons",
        {
            "amount_off": 500,
            "currency": "usd",
            "duration": "repeating",
            "duration_in_months": 3,
            "redeem_by": "2030-01-01T12:00:00+02:00",
        },
    )
    assert (amount["amount_off"], amount["currency"], amount["percent_off"]) == (500, "USD", None)
    assert (amount["duration"], amount["duration_in_months"]) == ("repeating", 3)
    assert amount["redeem_by"] == "2030-01-01T10:00:00Z"
    assert amount["name"] is None

    assert await billing.get(f"/v1/coupons/{percent['id']}") == percent
    listed = await billing.get("/v1/coupons")
    assert [c["id"] for c in listed["data"]] == [amount["id"], percent["id"]]
    assert (await billing.get("/v1/coupons", limit=1))["has_more"] is True
    # Stripe's default duration is once.
    once = await billing.post("/v1/coupons", {"percent_off": 10})
    assert once["duration"] == "once"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"percent_off": 10, "amount_off": 100, "currency": "USD"}, "amount_off"),
        ({"duration": "once"}, "percent_off"),
        ({"percent_off": 0}, "percent_off"),
        ({"percent_off": 101}, "percent_off"),
        ({"percent_off": -5}, "percent_off"),
        ({"percent_off": 12.345}, "percent_off"),
        ({"percent_off": "lots"}, "percent_off"),
        ({"amount_off": 100}, "currency"),
        ({"amount_off": 100, "currency": "ZZZ"}, "currency"),
        ({"amount_off": 0, "currency": "USD"}, "amount_off"),
        ({"amount_off": 1.5, "currency": "USD"}, "amount_off"),
        ({"percent_off": 10, "currency": "USD"}, "currency"),
        ({"percent_off": 10, "duration": "repeating"}, "duration_in_months"),
        ({"percent_off": 10, "duration": "once", "duration_in_months": 3}, "duration_in_months"),
        (
            {"percent_off": 10, "duration": "repeating", "duration_in_months": 0},
            "duration_in_months",
        ),
        ({"percent_off": 10, "duration": "sometimes"}, "duration"),
        ({"percent_off": 10, "max_redemptions": 0}, "max_redemptions"),
        ({"percent_off": 10, "redeem_by": "2030-01-01T00:00:00"}, "redeem_by"),
    ],
)
async def test_bad_coupons_are_refused_and_nothing_is_made(api, body, param) -> None:
    response = await api.post("/v1/coupons", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert (await api.get("/v1/coupons")).json()["data"] == []


async def test_create_get_and_list_tax_rates(billing) -> None:
    vat = await billing.post(
        "/v1/tax-rates",
        {"display_name": "VAT", "percentage": 20, "inclusive": True, "country": "GB"},
    )
    assert vat["id"].startswith("txr_")
    assert vat["object"] == "tax_rate"
    assert (vat["display_name"], vat["percentage"], vat["inclusive"]) == ("VAT", 20, True)
    assert (vat["country"], vat["description"]) == ("GB", None)
    sales = await billing.post(
        "/v1/tax-rates",
        {
            "display_name": "Sales tax",
            "percentage": "7.6250",
            "inclusive": False,
            "description": "Somewhere, CA",
        },
    )
    assert sales["percentage"] == 7.625
    assert sales["country"] is None
    assert await billing.get(f"/v1/tax-rates/{vat['id']}") == vat
    listed = await billing.get("/v1/tax-rates")
    assert [t["id"] for t in listed["data"]] == [sales["id"], vat["id"]]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"percentage": -1}, "percentage"),
        ({"percentage": 100.5}, "percentage"),
        ({"percentage": 1.23456}, "percentage"),
        ({"display_name": ""}, "display_name"),
        ({"country": "gb"}, "country"),
        ({"country": "GBR"}, "country"),
        ({"inclusive": None}, "inclusive"),
    ],
)
async def test_bad_tax_rates_are_refused_and_nothing_is_made(api, change, param) -> None:
    body = {"display_name": "VAT", "percentage": 20, "inclusive": False, **change}
    response = await api.post("/v1/tax-rates", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert (await api.get("/v1/tax-rates")).json()["data"] == []


async def test_another_tenants_coupons_and_tax_rates_are_invisible(billing, other_tenant) -> None:
    ours = await coupon(billing)
    vat = await billing.post(
        "/v1/tax-rates", {"display_name": "VAT", "percentage": 20, "inclusive": False}
    )
    theirs = other_tenant.client
    missing = await theirs.get(f"/v1/coupons/{ours['id']}")
    assert (missing.status_code, missing.json()["error"]["param"]) == (404, "coupon_id")
    missing = await theirs.get(f"/v1/tax-rates/{vat['id']}")
    assert (missing.status_code, missing.json()["error"]["param"]) == (404, "tax_rate_id")
    assert (await theirs.get("/v1/coupons")).json()["data"] == []
    assert (await theirs.get("/v1/tax-rates")).json()["data"] == []


# --- on subscriptions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"duration": "once"}, [250, None, None, None]),
        ({"duration": "repeating", "duration_in_months": 2}, [250, 250, None, None]),
        ({"duration": "forever"}, [250, 250, 250, 250]),
    ],
)
async def test_a_coupons_duration_across_renewals(billing, fields, expected) -> None:
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan(amount=1000)
    customer = await billing.customer(test_clock_id=clock["id"])
    twenty_five = await coupon(billing, **fields)
    sub = await subscribe(billing, customer, plan, coupon_id=twenty_five["id"])
    assert sub["status"] == "active"
    assert sub["coupon_id"] == twenty_five["id"]
    assert sub["discount_start"] == "2025-01-01T00:00:00Z"

    await billing.advance(clock, "2025-04-01T00:00:00Z")
    orders = await billing.orders(sub["id"])
    assert [o["period_start"][:10] for o in orders] == [
        "2025-01-01",
        "2025-02-01",
        "2025-03-01",
        "2025-04-01",
    ]
    assert discounts(orders) == expected
    for order in orders:
        off = order["discount"]["amount"] if order["discount"] else 0
        assert (order["subtotal"], order["total"]) == (1000, 1000 - off)
        assert order["status"] == "paid"
        assert order["amount_paid"] == order["total"]
        if order["discount"]:
            assert order["discount"]["coupon_id"] == twenty_five["id"]
            assert order["discount"]["name"] == "Spring"
    # Applied once, however many orders it discounted.
    assert (await billing.get(f"/v1/coupons/{twenty_five['id']}"))["times_redeemed"] == 1


async def test_repeating_months_count_from_when_the_coupon_was_applied(billing) -> None:
    # Applied at the start of a 14-day trial: the month covers the first paid period only.
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan(amount=1000, trial_days=14)
    customer = await billing.customer(test_clock_id=clock["id"])
    month = await coupon(billing, duration="repeating", duration_in_months=1)
    sub = await subscribe(billing, customer, plan, coupon_id=month["id"])
    assert sub["status"] == "trialing"
    await billing.advance(clock, "2025-03-20T00:00:00Z")
    orders = await billing.orders(sub["id"])
    assert [o["period_start"][:10] for o in orders] == ["2025-01-15", "2025-02-15", "2025-03-15"]
    assert discounts(orders) == [250, None, None]


async def test_once_discounts_the_first_order_after_a_trial(billing) -> None:
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan(amount=1000, trial_days=7)
    customer = await billing.customer(test_clock_id=clock["id"])
    once = await coupon(billing, duration="once")
    sub = await subscribe(billing, customer, plan, coupon_id=once["id"])
    await billing.advance(clock, "2025-02-10T00:00:00Z")
    assert discounts(await billing.orders(sub["id"])) == [250, None]


async def test_an_amount_off_coupon_and_tax_on_every_renewal(billing) -> None:
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan(amount=1000)
    vat = await billing.post(
        "/v1/tax-rates", {"display_name": "VAT", "percentage": 20, "inclusive": False}
    )
    customer = await billing.customer(test_clock_id=clock["id"], tax_rate_ids=[vat["id"]])
    off = await billing.post(
        "/v1/coupons", {"amount_off": 300, "currency": "USD", "duration": "forever"}
    )
    sub = await subscribe(billing, customer, plan, coupon_id=off["id"])
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    # The customer's tax rates as they are at each renewal.
    response = await billing.api.patch(f"/v1/customers/{customer['id']}", json={"tax_rate_ids": []})
    assert response.status_code == 200, response.text
    await billing.advance(clock, "2025-03-01T00:00:00Z")

    orders = await billing.orders(sub["id"])
    summary = [
        (o["subtotal"], o["discount"]["amount"], o["tax"], o["total_excluding_tax"], o["total"])
        for o in orders
    ]
    assert summary == [
        (1000, 300, 140, 700, 840),
        (1000, 300, 140, 700, 840),
        (1000, 300, 0, 700, 700),
    ]
    assert orders[0]["tax_amounts"] == [
        {
            "tax_rate_id": vat["id"],
            "display_name": "VAT",
            "percentage": 20,
            "inclusive": False,
            "amount": 140,
        }
    ]
    assert orders[2]["tax_amounts"] == []
    # What is charged is the total with tax.
    for order in orders:
        payments = await billing.get("/v1/payments", order_id=order["id"])
        assert [p["amount"] for p in payments["data"]] == [order["total"]]


async def test_coupons_that_cannot_be_applied_make_nothing(billing, api) -> None:
    plan = await billing.plan(amount=1000)
    customer = await billing.customer()
    euros = await billing.post("/v1/coupons", {"amount_off": 100, "currency": "EUR"})
    single = await coupon(billing, max_redemptions=1)
    expired = await coupon(billing, redeem_by="2020-01-01T00:00:00Z")
    first = await subscribe(billing, customer, plan, coupon_id=single["id"])

    cases = [
        (euros["id"], 400, "currency_mismatch"),
        (single["id"], 400, "coupon_max_redemptions"),
        (expired["id"], 400, "coupon_expired"),
        ("coupon_missing", 404, "resource_missing"),
    ]
    fresh = await billing.customer()  # no currency yet: a refusal must not give it one
    for coupon_id, status, code in cases:
        response = await api.post(
            "/v1/subscriptions",
            json={"customer_id": fresh["id"], "plan_id": plan["id"], "coupon_id": coupon_id},
        )
        assert response.status_code == status, (coupon_id, response.text)
        error = response.json()["error"]
        assert (error["code"], error["param"]) == (code, "coupon_id")
    listed = (await api.get("/v1/subscriptions")).json()["data"]
    assert [s["id"] for s in listed] == [first["id"]]
    assert len((await api.get("/v1/orders")).json()["data"]) == 1
    assert (await billing.get(f"/v1/customers/{fresh['id']}"))["currency"] is None
    for unused in (euros, expired):
        assert (await billing.get(f"/v1/coupons/{unused['id']}"))["times_redeemed"] == 0
    assert (await billing.get(f"/v1/coupons/{single['id']}"))["times_redeemed"] == 1


async def test_redeem_by_is_in_the_customers_clock_time(billing, api) -> None:
    plan = await billing.plan(amount=1000)
    deadline = await coupon(billing, redeem_by="2030-02-01T00:00:00Z")
    before = await billing.clock("2030-01-31T00:00:00Z")
    customer = await billing.customer(test_clock_id=before["id"])
    sub = await subscribe(billing, customer, plan, coupon_id=deadline["id"])
    assert discounts(await billing.orders(sub["id"])) == [250]

    after = await billing.clock("2030-02-02T00:00:00Z")
    late = await billing.customer(test_clock_id=after["id"])
    response = await api.post(
        "/v1/subscriptions",
        json={"customer_id": late["id"], "plan_id": plan["id"], "coupon_id": deadline["id"]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "coupon_expired"
    # Past in real time, but not on a clock set before it.
    old = await coupon(billing, redeem_by="2020-01-01T00:00:00Z")
    past = await billing.clock("2019-06-01T00:00:00Z")
    early = await billing.customer(test_clock_id=past["id"])
    sub = await subscribe(billing, early, plan, coupon_id=old["id"])
    assert sub["coupon_id"] == old["id"]


async def test_another_tenants_coupon_cannot_be_applied(billing, other_tenant) -> None:
    ours = await coupon(billing)
    theirs = other_tenant.client
    product = (await theirs.post("/v1/products", json={"name": "Pro"})).json()
    plan = (
        await theirs.post(
            "/v1/plans",
            json={
                "product_id": product["id"],
                "currency": "USD",
                "amount": 1000,
                "interval": "month",
            },
        )
    ).json()
    customer = (await theirs.post("/v1/customers", json={"email": "x@example.com"})).json()
    response = await theirs.post(
        "/v1/subscriptions",
        json={"customer_id": customer["id"], "plan_id": plan["id"], "coupon_id": ours["id"]},
    )
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "coupon_id"
    assert (await theirs.get("/v1/subscriptions")).json()["data"] == []
    assert (await billing.get(f"/v1/coupons/{ours['id']}"))["times_redeemed"] == 0


async def test_a_redeemer_counts_once_and_is_given_back_once(billing, runtime, tenant) -> None:
    limited = await coupon(billing, max_redemptions=1)
    at = datetime(2025, 1, 1, tzinfo=UTC)
    client = runtime.subscriptions
    for _ in range(2):
        redeemed = await client.redeem_coupon(tenant.id, limited["id"], "USD", at, "ord_1")
        assert redeemed.times_redeemed == 1
    with pytest.raises(InvalidRequest) as refused:
        await client.redeem_coupon(tenant.id, limited["id"], "USD", at, "ord_2")
    assert refused.value.code == "coupon_max_redemptions"
    for _ in range(2):
        await client.release_coupon(tenant.id, limited["id"], "ord_1")
        assert (await billing.get(f"/v1/coupons/{limited['id']}"))["times_redeemed"] == 0
    await client.redeem_coupon(tenant.id, limited["id"], "USD", at, "ord_2")
    assert (await billing.get(f"/v1/coupons/{limited['id']}"))["times_redeemed"] == 1
