"""Pricing models through the public API: plans, the orders their subscriptions make, refusals."""

from __future__ import annotations

from typing import Any

EXAMPLE_TIERS = [{"up_to": 10, "unit_amount": 500}, {"up_to": None, "unit_amount": 400}]


def lines_of(order: dict[str, Any]) -> list[tuple[str, int, int, int]]:
    return [
        (line["description"], line["quantity"], line["unit_amount"], line["amount"])
        for line in order["lines"]
    ]


async def subscribe(billing, plan: dict[str, Any], quantity: int, **customer: Any) -> dict:
    buyer = await billing.customer(**customer)
    return await billing.post(
        "/v1/subscriptions",
        {"customer_id": buyer["id"], "plan_id": plan["id"], "quantity": quantity},
    )


async def test_graduated_charges_each_tier_its_share(billing) -> None:
    plan = await billing.plan(amount=None, pricing_model="tiered_graduated", tiers=EXAMPLE_TIERS)
    assert plan["amount"] is None
    sub = await subscribe(billing, plan, 15)
    assert sub["status"] == "active"
    [order] = await billing.orders(sub["id"])
    assert order["status"] == "paid"
    assert order["total"] == order["amount_paid"] == 7000
    assert lines_of(order) == [
        ("Pro, 1-10 units (per month)", 10, 500, 5000),
        ("Pro, 11-15 units (per month)", 5, 400, 2000),
    ]
    assert all(line["period_start"] == order["period_start"] for line in order["lines"])


async def test_volume_charges_every_unit_at_the_price_of_its_tier(billing) -> None:
    plan = await billing.plan(amount=None, pricing_model="tiered_volume", tiers=EXAMPLE_TIERS)
    sub = await subscribe(billing, plan, 15)
    [order] = await billing.orders(sub["id"])
    assert order["total"] == 6000
    assert lines_of(order) == [("Pro, 15 units at the 11+ units price (per month)", 15, 400, 6000)]


async def test_flat_fees_are_lines_of_their_own(billing) -> None:
    tiers = [
        {"up_to": 5, "unit_amount": 0, "flat_amount": 2500},
        {"up_to": 20, "unit_amount": 300, "flat_amount": 1000},
        {"up_to": None, "unit_amount": 200},
    ]
    graduated = await billing.plan(
        amount=None, pricing_model="tiered_graduated", tiers=tiers, nickname="Team"
    )
    volume = await billing.plan(amount=None, pricing_model="tiered_volume", tiers=tiers)
    [order] = await billing.orders((await subscribe(billing, graduated, 7))["id"])
    assert lines_of(order) == [
        ("Team, 1-5 units (per month)", 5, 0, 0),
        ("Team, 1-5 units flat fee (per month)", 1, 2500, 2500),
        ("Team, 6-7 units (per month)", 2, 300, 600),
        ("Team, 6-20 units flat fee (per month)", 1, 1000, 1000),
    ]
    assert order["total"] == 4100
    [order] = await billing.orders((await subscribe(billing, volume, 7))["id"])
    assert lines_of(order) == [
        ("Pro, 7 units at the 6-20 units price (per month)", 7, 300, 2100),
        ("Pro, 6-20 units flat fee (per month)", 1, 1000, 1000),
    ]
    assert order["total"] == 3100


async def test_package_charges_every_started_package(billing) -> None:
    plan = await billing.plan(amount=700, pricing_model="package", package_size=10)
    assert plan["package_size"] == 10
    [order] = await billing.orders((await subscribe(billing, plan, 11))["id"])
    assert lines_of(order) == [("Pro, 11 units in packages of 10 (per month)", 2, 700, 1400)]
    [order] = await billing.orders((await subscribe(billing, plan, 10))["id"])
    assert order["total"] == 700


async def test_renewals_and_trials_price_the_same_way(billing) -> None:
    clock = await billing.clock("2025-01-15T00:00:00Z")
    plan = await billing.plan(amount=None, pricing_model="tiered_graduated", tiers=EXAMPLE_TIERS)
    trial = await billing.plan(
        amount=None, pricing_model="tiered_volume", tiers=EXAMPLE_TIERS, trial_days=7
    )
    sub = await subscribe(billing, plan, 12, test_clock_id=clock["id"])
    trialing = await subscribe(billing, trial, 3, test_clock_id=clock["id"])
    assert trialing["status"] == "trialing"
    await billing.advance(clock, "2025-02-15T00:00:00Z")
    first, renewal = await billing.orders(sub["id"])
    assert first["total"] == renewal["total"] == 10 * 500 + 2 * 400
    assert lines_of(renewal) == lines_of(first)
    assert renewal["status"] == "paid"
    [after_trial] = await billing.orders(trialing["id"])
    assert after_trial["total"] == 3 * 500


async def test_plans_show_their_tiers_and_package_size(billing) -> None:
    tiered = await billing.plan(amount=None, pricing_model="tiered_volume", tiers=EXAMPLE_TIERS)
    package = await billing.plan(amount=250, pricing_model="package", package_size=5)
    flat = await billing.plan(amount=900)
    stored_tiers = [
        {"up_to": 10, "unit_amount": 500, "flat_amount": 0},
        {"up_to": None, "unit_amount": 400, "flat_amount": 0},
    ]
    assert tiered["tiers"] == stored_tiers
    assert (tiered["amount"], tiered["package_size"]) == (None, None)
    assert (package["amount"], package["package_size"], package["tiers"]) == (250, 5, None)
    assert (flat["amount"], flat["package_size"], flat["tiers"]) == (900, None, None)
    for plan in (tiered, package, flat):
        assert await billing.get(f"/v1/plans/{plan['id']}") == plan
    listed = await billing.get("/v1/plans")
    assert listed["data"] == [flat, package, tiered]


async def test_bad_pricing_is_400_with_its_param_and_makes_nothing(billing, api) -> None:
    product = await billing.post("/v1/products", {"name": "Pro"})
    base = {"product_id": product["id"], "currency": "USD", "interval": "month"}
    graduated = {**base, "pricing_model": "tiered_graduated"}
    top = {"up_to": None, "unit_amount": 100}
    cases: list[tuple[dict[str, Any], str]] = [
        (graduated, "tiers"),
        ({**base, "pricing_model": "tiered_volume", "tiers": None}, "tiers"),
        ({**graduated, "tiers": []}, "tiers"),
        ({**graduated, "tiers": [{"up_to": 10, "unit_amount": 1}]}, "tiers.0.up_to"),
        ({**graduated, "tiers": [top, top]}, "tiers.0.up_to"),
        ({**graduated, "tiers": [{"up_to": 10, "unit_amount": 1}] * 2 + [top]}, "tiers.1.up_to"),
        (
            {
                **graduated,
                "tiers": [
                    {"up_to": 10, "unit_amount": 1},
                    {"up_to": 20, "unit_amount": 1},
                    {"up_to": 15, "unit_amount": 1},
                    top,
                ],
            },
            "tiers.2.up_to",
        ),
        ({**graduated, "tiers": [{"up_to": 0, "unit_amount": 1}, top]}, "tiers.0.up_to"),
        ({**graduated, "tiers": [{"up_to": -5, "unit_amount": 1}, top]}, "tiers.0.up_to"),
        ({**graduated, "tiers": [{"up_to": "10", "unit_amount": 1}, top]}, "tiers.0.up_to"),
        ({**graduated, "tiers": [{"up_to": 10.0, "unit_amount": 1}, top]}, "tiers.0.up_to"),
        ({**graduated, "tiers": [{"unit_amount": 1}]}, "tiers.0.up_to"),
        ({**graduated, "tiers": [{"up_to": 10}, top]}, "tiers.0.unit_amount"),
        (
            {**graduated, "tiers": [{"up_to": 10, "unit_amount": 1}, {**top, "unit_amount": -1}]},
            "tiers.1.unit_amount",
        ),
        ({**graduated, "tiers": [{**top, "unit_amount": 1.5}]}, "tiers.0.unit_amount"),
        ({**graduated, "tiers": [{**top, "flat_amount": -1}]}, "tiers.0.flat_amount"),
        ({**graduated, "tiers": [{**top, "flat_amount": True}]}, "tiers.0.flat_amount"),
        ({**graduated, "tiers": [{**top, "flat_amount": 2**63}]}, "tiers.0.flat_amount"),
        ({**graduated, "tiers": [top] * 101}, "tiers"),
        ({**graduated, "tiers": [top], "amount": 1000}, "amount"),
        ({**graduated, "tiers": [top], "package_size": 10}, "package_size"),
        ({**base, "amount": 1000, "tiers": [top]}, "tiers"),
        ({**base, "amount": 1000, "pricing_model": "per_unit", "tiers": [top]}, "tiers"),
        ({**base}, "amount"),
        ({**base, "pricing_model": "per_unit"}, "amount"),
        ({**base, "pricing_model": "package", "package_size": 10}, "amount"),
        ({**base, "amount": 100, "pricing_model": "package"}, "package_size"),
        ({**base, "amount": 100, "pricing_model": "package", "package_size": 0}, "package_size"),
        ({**base, "amount": 100, "pricing_model": "package", "package_size": "2"}, "package_size"),
        ({**base, "amount": 100, "pricing_model": "per_unit", "package_size": 10}, "package_size"),
        ({**base, "amount": 2**63}, "amount"),
    ]
    for body, param in cases:
        response = await api.post("/v1/plans", json=body)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (body, error)
        assert error["type"] == "invalid_request_error"
    assert (await api.get("/v1/plans")).json()["data"] == []


async def test_a_quantity_whose_period_would_overflow_is_refused(billing, api) -> None:
    big = 2**62
    graduated = await billing.plan(
        amount=None,
        pricing_model="tiered_graduated",
        tiers=[
            {"up_to": 1, "unit_amount": big - 1},
            {"up_to": None, "unit_amount": 1, "flat_amount": big},
        ],
    )
    package = await billing.plan(amount=big, pricing_model="package", package_size=3)
    customer = await billing.customer()
    for plan, quantity in ((graduated, 2), (package, 4)):
        response = await api.post(
            "/v1/subscriptions",
            json={"customer_id": customer["id"], "plan_id": plan["id"], "quantity": quantity},
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "quantity"
    assert (await api.get("/v1/subscriptions")).json()["data"] == []
    assert (await api.get("/v1/orders")).json()["data"] == []
    # One unit fewer stays within 64 bits, and is billed.
    sub = await billing.post(
        "/v1/subscriptions",
        {"customer_id": customer["id"], "plan_id": graduated["id"], "quantity": 1},
    )
    [order] = await billing.orders(sub["id"])
    assert order["total"] == big - 1
