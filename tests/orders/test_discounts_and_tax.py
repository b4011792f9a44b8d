"""Coupons and tax rates on one-off orders, through the HTTP API."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest


async def post(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def tax_rate(api: httpx.AsyncClient, percentage: Any, inclusive: bool, name: str = "VAT"):
    body = {"display_name": name, "percentage": percentage, "inclusive": inclusive}
    return await post(api, "/v1/tax-rates", body)


async def times_redeemed(api: httpx.AsyncClient, coupon: dict[str, Any]) -> int:
    return int((await api.get(f"/v1/coupons/{coupon['id']}")).json()["times_redeemed"])


async def order_count(api: httpx.AsyncClient) -> int:
    return len((await api.get("/v1/orders", params={"limit": 100})).json()["data"])


TWO_LINES = [
    {"description": "Seats", "unit_amount": 1250, "quantity": 3},
    {"description": "Setup fee", "unit_amount": 5000},
]


async def test_a_percent_coupon(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    coupon = await post(api, "/v1/coupons", {"name": "Launch", "percent_off": 10})
    order = await make_order(customer["id"], lines=TWO_LINES, coupon_id=coupon["id"])
    assert order["subtotal"] == 8750
    assert order["discount"] == {"coupon_id": coupon["id"], "name": "Launch", "amount": 875}
    assert (order["tax"], order["tax_amounts"]) == (0, [])
    assert order["total"] == order["total_excluding_tax"] == order["amount_due"] == 7875
    assert (await api.get(f"/v1/orders/{order['id']}")).json() == order
    assert await times_redeemed(api, coupon) == 1


async def test_an_amount_coupon_never_takes_more_than_the_subtotal(
    api, make_customer, make_order
) -> None:
    customer = await make_customer(currency="USD")
    coupon = await post(api, "/v1/coupons", {"amount_off": 1500, "currency": "USD"})
    order = await make_order(customer["id"], unit_amount=4000, coupon_id=coupon["id"])
    assert (order["discount"]["amount"], order["total"]) == (1500, 2500)
    small = await make_order(customer["id"], unit_amount=999, coupon_id=coupon["id"])
    assert (small["discount"]["amount"], small["total"]) == (999, 0)
    assert small["status"] == "paid"  # nothing due


async def test_the_issues_tax_examples(api, make_customer, make_order) -> None:
    exclusive = await tax_rate(api, 20, inclusive=False)
    inclusive = await tax_rate(api, 20, inclusive=True)
    added = await make_customer(currency="USD", tax_rate_ids=[exclusive["id"]])
    order = await make_order(added["id"], unit_amount=1000)
    assert (order["subtotal"], order["tax"], order["total_excluding_tax"], order["total"]) == (
        1000,
        200,
        1000,
        1200,
    )
    assert order["tax_amounts"] == [
        {
            "tax_rate_id": exclusive["id"],
            "display_name": "VAT",
            "percentage": 20,
            "inclusive": False,
            "amount": 200,
        }
    ]
    assert order["amount_due"] == 1200

    included = await make_customer(currency="USD", tax_rate_ids=[inclusive["id"]])
    order = await make_order(included["id"], unit_amount=1000)
    assert (order["subtotal"], order["tax"], order["total_excluding_tax"], order["total"]) == (
        1000,
        167,
        833,
        1000,
    )
    assert order["tax_amounts"][0]["inclusive"] is True


async def test_the_discount_comes_off_before_tax(api, make_customer, make_order) -> None:
    vat = await tax_rate(api, 20, inclusive=False)
    customer = await make_customer(currency="USD", tax_rate_ids=[vat["id"]])
    coupon = await post(api, "/v1/coupons", {"percent_off": 10})
    order = await make_order(customer["id"], unit_amount=1000, coupon_id=coupon["id"])
    assert (order["subtotal"], order["discount"]["amount"], order["tax"], order["total"]) == (
        1000,
        100,
        180,
        1080,
    )
    assert order["total_excluding_tax"] == 900


async def test_several_tax_rates(api, make_customer, make_order) -> None:
    state = await tax_rate(api, "7.25", inclusive=False, name="State")
    city = await tax_rate(api, 1.5, inclusive=False, name="City")
    customer = await make_customer(currency="USD", tax_rate_ids=[state["id"], city["id"]])
    coupon = await post(api, "/v1/coupons", {"amount_off": 1000, "currency": "USD"})
    order = await make_order(customer["id"], unit_amount=10_000, coupon_id=coupon["id"])
    # 7.25% of 9000 is 652.5: rounded half-up, once.
    assert [(t["display_name"], t["percentage"], t["amount"]) for t in order["tax_amounts"]] == [
        ("State", 7.25, 653),
        ("City", 1.5, 135),
    ]
    assert (order["tax"], order["total"]) == (788, 9788)

    # Two inclusive rates share the price: 1100 holding 5% and 5% is 1000 net.
    five = await tax_rate(api, 5, inclusive=True, name="A")
    other_five = await tax_rate(api, 5, inclusive=True, name="B")
    customer = await make_customer(currency="USD", tax_rate_ids=[five["id"], other_five["id"]])
    order = await make_order(customer["id"], unit_amount=1100)
    assert [t["amount"] for t in order["tax_amounts"]] == [50, 50]
    assert (order["total"], order["total_excluding_tax"]) == (1100, 1000)


async def test_jpy_rounds_to_whole_yen(api, make_customer, make_order) -> None:
    consumption = await tax_rate(api, 10, inclusive=False, name="Consumption tax")
    customer = await make_customer(currency="JPY", tax_rate_ids=[consumption["id"]])
    coupon = await post(api, "/v1/coupons", {"percent_off": 15})
    order = await make_order(customer["id"], unit_amount=999, coupon_id=coupon["id"])
    # 15% of 999 is 149.85 -> 150; 10% of 849 is 84.9 -> 85.
    assert (order["discount"]["amount"], order["tax"], order["total"]) == (150, 85, 934)
    included = await tax_rate(api, 10, inclusive=True, name="Consumption tax")
    customer = await make_customer(currency="JPY", tax_rate_ids=[included["id"]])
    order = await make_order(customer["id"], unit_amount=999)
    assert (order["tax"], order["total"]) == (91, 999)  # 999 x 10 / 110 = 90.8


async def test_the_invoice_shows_the_discount_and_tax_lines(api, make_customer, make_order) -> None:
    vat = await tax_rate(api, "17.5", inclusive=False)
    customer = await make_customer(currency="USD", tax_rate_ids=[vat["id"]])
    coupon = await post(api, "/v1/coupons", {"name": "Spring <sale>", "percent_off": 10})
    order = await make_order(customer["id"], unit_amount=2000, coupon_id=coupon["id"])
    html = (await api.get(f"/v1/orders/{order['id']}/invoice")).text
    assert 'Discount (Spring &lt;sale&gt;)</td><td class="num">-2.00 USD<' in html
    assert 'Total excluding tax</td><td class="num">18.00 USD<' in html
    assert 'VAT (17.5%)</td><td class="num">3.15 USD<' in html
    assert 'Total</td><td class="num">21.15 USD<' in html

    included = await tax_rate(api, 20, inclusive=True)
    customer = await make_customer(currency="USD", tax_rate_ids=[included["id"]])
    order = await make_order(customer["id"], unit_amount=1000)
    html = (await api.get(f"/v1/orders/{order['id']}/invoice")).text
    assert 'VAT (20%, included)</td><td class="num">1.67 USD<' in html
    assert "Discount" not in html


async def test_a_draft_keeps_its_discount_when_finalized(api, make_customer, make_order) -> None:
    customer = await make_customer(currency="USD")
    coupon = await post(api, "/v1/coupons", {"percent_off": 50})
    draft = await make_order(customer["id"], coupon_id=coupon["id"], auto_finalize=False)
    assert (draft["status"], draft["total"]) == ("draft", 500)
    final = (await api.post(f"/v1/orders/{draft['id']}/finalize")).json()
    assert (final["status"], final["total"], final["discount"]) == (
        "open",
        500,
        draft["discount"],
    )


@pytest.mark.parametrize(
    ("coupon_body", "code"),
    [
        ({"percent_off": 10, "max_redemptions": 1}, "coupon_max_redemptions"),
        ({"percent_off": 10, "redeem_by": "2020-01-01T00:00:00Z"}, "coupon_expired"),
        ({"amount_off": 100, "currency": "EUR"}, "currency_mismatch"),
    ],
)
async def test_a_coupon_that_cannot_be_applied_makes_nothing(
    api, make_customer, make_order, coupon_body, code
) -> None:
    coupon = await post(api, "/v1/coupons", coupon_body)
    if "max_redemptions" in coupon_body:
        used = await make_customer(currency="USD")
        await make_order(used["id"], coupon_id=coupon["id"])
    before, redeemed = await order_count(api), await times_redeemed(api, coupon)
    customer = await make_customer()  # no currency: a refused order must not give it one
    response = await api.post(
        "/v1/orders",
        json={
            "customer_id": customer["id"],
            "currency": "USD",
            "lines": [{"description": "x", "unit_amount": 1000}],
            "coupon_id": coupon["id"],
        },
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, "coupon_id")
    assert await order_count(api) == before
    assert await times_redeemed(api, coupon) == redeemed
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["currency"] is None


async def test_redeem_by_is_in_the_customers_clock_time(api, make_customer, make_order) -> None:
    coupon = await post(
        api, "/v1/coupons", {"percent_off": 10, "redeem_by": "2030-02-01T00:00:00Z"}
    )
    late_clock = await post(api, "/v1/test-clocks", {"frozen_time": "2030-02-01T00:00:01Z"})
    late = await make_customer(currency="USD", test_clock_id=late_clock["id"])
    response = await api.post(
        "/v1/orders",
        json={
            "customer_id": late["id"],
            "lines": [{"description": "x", "unit_amount": 1000}],
            "coupon_id": coupon["id"],
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "coupon_expired"
    on_time_clock = await post(api, "/v1/test-clocks", {"frozen_time": "2030-01-31T23:00:00Z"})
    on_time = await make_customer(currency="USD", test_clock_id=on_time_clock["id"])
    order = await make_order(on_time["id"], coupon_id=coupon["id"])
    assert order["discount"]["amount"] == 100
    # Long past in real time, yet not on a clock that stands before it.
    old = await post(api, "/v1/coupons", {"percent_off": 10, "redeem_by": "2020-01-01T00:00:00Z"})
    past_clock = await post(api, "/v1/test-clocks", {"frozen_time": "2019-12-31T00:00:00Z"})
    past = await make_customer(currency="USD", test_clock_id=past_clock["id"])
    assert (await make_order(past["id"], coupon_id=old["id"]))["discount"]["amount"] == 100


async def test_a_refused_order_gives_its_coupon_use_back(api, make_customer, make_order) -> None:
    coupon = await post(api, "/v1/coupons", {"percent_off": 10, "max_redemptions": 1})
    customer = await make_customer(currency="USD")
    # The coupon applies (it has no currency), then the order's EUR is refused: USD customer.
    response = await api.post(
        "/v1/orders",
        json={
            "customer_id": customer["id"],
            "currency": "EUR",
            "lines": [{"description": "x", "unit_amount": 1000}],
            "coupon_id": coupon["id"],
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "currency"
    assert await times_redeemed(api, coupon) == 0
    assert await order_count(api) == 0
    # Its one use is still there for a real order.
    assert (await make_order(customer["id"], coupon_id=coupon["id"]))["total"] == 900
    assert await times_redeemed(api, coupon) == 1


async def test_unknown_and_other_tenants_coupons_are_404(
    api, other_tenant, make_customer, make_order
) -> None:
    theirs = (await other_tenant.client.post("/v1/coupons", json={"percent_off": 10})).json()
    customer = await make_customer(currency="USD")
    for coupon_id in ("coupon_missing", theirs["id"]):
        response = await api.post(
            "/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "x", "unit_amount": 1000}],
                "coupon_id": coupon_id,
            },
        )
        assert response.status_code == 404, response.text
        assert response.json()["error"]["param"] == "coupon_id"
    assert await order_count(api) == 0
    assert (await other_tenant.client.get(f"/v1/coupons/{theirs['id']}")).json()[
        "times_redeemed"
    ] == 0


async def test_concurrent_orders_cannot_redeem_more_than_the_maximum(api, make_customer) -> None:
    coupon = await post(api, "/v1/coupons", {"percent_off": 10, "max_redemptions": 2})
    customer = await make_customer(currency="USD")
    body = {
        "customer_id": customer["id"],
        "lines": [{"description": "x", "unit_amount": 1000}],
        "coupon_id": coupon["id"],
    }
    responses = await asyncio.gather(*(api.post("/v1/orders", json=body) for _ in range(6)))
    assert sorted(r.status_code for r in responses) == [200, 200, 400, 400, 400, 400]
    assert await times_redeemed(api, coupon) == 2
    assert await order_count(api) == 2
