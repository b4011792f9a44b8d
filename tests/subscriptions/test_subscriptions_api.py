"""Subscriptions through the public API, on test clocks."""

from __future__ import annotations

GOOD_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
DECLINING_CARD = {**GOOD_CARD, "number": "4000000000000341"}


async def test_subscribe_charges_the_first_period_at_once(billing) -> None:
    clock = await billing.clock("2025-01-31T10:00:00Z")
    plan = await billing.plan(amount=1500)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "active"
    assert sub["current_period_start"] == "2025-01-31T10:00:00Z"
    assert sub["current_period_end"] == "2025-02-28T10:00:00Z"
    assert sub["cancel_at_period_end"] is False
    assert sub["quantity"] == 1

    [order] = await billing.orders(sub["id"])
    assert order["status"] == "paid"
    assert order["total"] == order["amount_paid"] == 1500
    assert order["number"] == 1
    assert (order["period_start"], order["period_end"]) == (
        sub["current_period_start"],
        sub["current_period_end"],
    )
    assert sub["latest_order_id"] == order["id"]
    payments = await billing.get("/v1/payments", order_id=order["id"])
    assert [p["status"] for p in payments["data"]] == ["succeeded"]
    customer = await billing.get(f"/v1/customers/{customer['id']}")
    assert customer["currency"] == "USD"


async def test_monthly_periods_keep_the_anchor_day_for_a_year(billing) -> None:
    clock = await billing.clock("2024-01-31T00:00:00Z")
    plan = await billing.plan(amount=999)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    await billing.advance(clock, "2025-01-31T00:00:00Z")
    orders = await billing.orders(sub["id"])
    starts = [o["period_start"][:10] for o in orders]
    assert starts == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
        "2024-05-31",
        "2024-06-30",
        "2024-07-31",
        "2024-08-31",
        "2024-09-30",
        "2024-10-31",
        "2024-11-30",
        "2024-12-31",
        "2025-01-31",
    ]
    assert all(o["status"] == "paid" for o in orders)
    assert sorted(o["number"] for o in orders) == list(range(1, 14))
    sub = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert sub["status"] == "active"
    assert sub["current_period_end"].startswith("2025-02-28")
    # Advancing again within the period makes nothing new; re-running the bill run neither.
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    assert len(await billing.orders(sub["id"])) == 13


async def test_every_interval_renews_once_per_period(billing) -> None:
    clock = await billing.clock("2023-03-15T12:00:00Z")
    customer = await billing.customer(test_clock_id=clock["id"])
    # Orders made from Mar 15 to Apr 15 12:00 inclusive (a period starting at the new time is due).
    expected = {("day", 1): 32, ("week", 2): 3, ("month", 1): 2, ("month", 3): 1, ("year", 1): 1}
    subs = {}
    for interval, count in expected:
        plan = await billing.plan(amount=100, interval=interval, interval_count=count)
        subs[(interval, count)] = await billing.post(
            "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
        )
    await billing.advance(clock, "2023-04-15T12:00:00Z")
    for key, count in expected.items():
        orders = await billing.orders(subs[key]["id"])
        assert len(orders) == count, key
        assert len({o["period_start"] for o in orders}) == count


async def test_trial_then_first_charge_when_it_ends(billing) -> None:
    clock = await billing.clock("2025-03-01T00:00:00Z")
    plan = await billing.plan(amount=2000, trial_days=14)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "trialing"
    assert sub["trial_end"] == "2025-03-15T00:00:00Z"
    assert sub["current_period_end"] == sub["trial_end"]
    assert await billing.orders(sub["id"]) == []

    await billing.advance(clock, "2025-03-16T00:00:00Z")
    sub = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert sub["status"] == "active"
    assert sub["current_period_start"] == "2025-03-15T00:00:00Z"
    assert sub["current_period_end"] == "2025-04-15T00:00:00Z"
    [order] = await billing.orders(sub["id"])
    assert order["status"] == "paid" and order["total"] == 2000


async def test_trial_days_on_the_subscription_override_the_plan(billing) -> None:
    clock = await billing.clock("2025-03-01T00:00:00Z")
    plan = await billing.plan(trial_days=30)
    customer = await billing.customer(test_clock_id=clock["id"])
    none = await billing.post(
        "/v1/subscriptions",
        {"customer_id": customer["id"], "plan_id": plan["id"], "trial_days": 0},
    )
    assert none["status"] == "active"
    three = await billing.post(
        "/v1/subscriptions",
        {"customer_id": customer["id"], "plan_id": plan["id"], "trial_days": 3},
    )
    assert three["status"] == "trialing"
    assert three["trial_end"] == "2025-03-04T00:00:00Z"


async def test_a_declined_first_charge_leaves_it_incomplete_until_paid(billing) -> None:
    plan = await billing.plan(amount=1200)
    customer = await billing.customer(card=DECLINING_CARD)
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "incomplete"
    [order] = await billing.orders(sub["id"])
    assert order["status"] == "open"
    failed = await billing.get("/v1/payments", order_id=order["id"])
    assert [(p["status"], p["failure_code"]) for p in failed["data"]] == [
        ("failed", "card_declined")
    ]

    good = await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods", {"card": GOOD_CARD, "set_default": True}
    )
    payment = await billing.post("/v1/payments", {"order_id": order["id"]})
    assert payment["status"] == "succeeded"
    assert payment["payment_method_id"] == good["id"]
    sub = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert sub["status"] == "active"


async def test_no_payment_method_is_incomplete(billing) -> None:
    plan = await billing.plan()
    customer = await billing.customer(card=None)
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "incomplete"
    [order] = await billing.orders(sub["id"])
    assert order["status"] == "open"


async def test_an_incomplete_subscription_ends_with_its_first_period(billing) -> None:
    clock = await billing.clock("2025-05-01T00:00:00Z")
    plan = await billing.plan()
    customer = await billing.customer(card=None, test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    await billing.advance(clock, "2025-07-01T00:00:00Z")
    sub = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert sub["status"] == "canceled"
    assert sub["ended_at"] == "2025-06-01T00:00:00Z"
    assert len(await billing.orders(sub["id"])) == 1


async def test_a_declined_renewal_makes_it_past_due(billing) -> None:
    clock = await billing.clock("2025-01-10T00:00:00Z")
    plan = await billing.plan(amount=700)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    await billing.post(
        f"/v1/customers/{customer['id']}/payment-methods",
        {"card": DECLINING_CARD, "set_default": True},
    )
    await billing.advance(clock, "2025-02-10T00:00:01Z")
    sub = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert sub["status"] == "past_due"
    first, renewal = await billing.orders(sub["id"])
    assert (first["status"], renewal["status"]) == ("paid", "open")


async def test_cancel_at_period_end_then_ends_with_no_further_order(billing) -> None:
    clock = await billing.clock("2025-01-01T00:00:00Z")
    plan = await billing.plan()
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    await billing.advance(clock, "2025-01-15T00:00:00Z")
    pending = await billing.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": True})
    assert pending["status"] == "active"
    assert pending["cancel_at_period_end"] is True
    assert pending["canceled_at"] == "2025-01-15T00:00:00Z"
    await billing.advance(clock, "2025-04-01T00:00:00Z")
    ended = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert ended["status"] == "canceled"
    assert ended["ended_at"] == "2025-02-01T00:00:00Z"
    assert len(await billing.orders(sub["id"])) == 1


async def test_cancel_now_ends_at_once(billing, api) -> None:
    plan = await billing.plan()
    customer = await billing.customer()
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    ended = await billing.post(f"/v1/subscriptions/{sub['id']}/cancel", {"at_period_end": False})
    assert ended["status"] == "canceled"
    assert ended["ended_at"] is not None
    again = await api.post(f"/v1/subscriptions/{sub['id']}/cancel", json={})
    assert again.status_code == 409


async def test_per_unit_and_flat_pricing(billing) -> None:
    customer = await billing.customer()
    per_unit = await billing.plan(amount=1000, pricing_model="per_unit")
    flat = await billing.plan(amount=1000, pricing_model="flat")
    a = await billing.post(
        "/v1/subscriptions",
        {"customer_id": customer["id"], "plan_id": per_unit["id"], "quantity": 3},
    )
    b = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": flat["id"], "quantity": 3}
    )
    [order_a] = await billing.orders(a["id"])
    [order_b] = await billing.orders(b["id"])
    assert order_a["total"] == 3000
    assert order_a["lines"][0]["quantity"] == 3
    assert order_b["total"] == 1000


async def test_currencies_keep_their_minor_units(billing) -> None:
    for currency, amount in (("JPY", 500), ("KWD", 1250), ("USD", 1999)):
        plan = await billing.plan(currency=currency, amount=amount)
        customer = await billing.customer()
        sub = await billing.post(
            "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
        )
        [order] = await billing.orders(sub["id"])
        assert (order["currency"], order["total"]) == (currency, amount)


async def test_bad_subscription_input_is_4xx_and_makes_nothing(billing, api) -> None:
    usd = await billing.plan(currency="USD")
    eur = await billing.plan(currency="EUR")
    customer = await billing.customer(currency="USD")
    cases = [
        ({"customer_id": customer["id"], "plan_id": eur["id"]}, 400, "plan_id"),
        ({"customer_id": "cus_missing", "plan_id": usd["id"]}, 404, "customer_id"),
        ({"customer_id": customer["id"], "plan_id": "plan_missing"}, 404, "plan_id"),
        ({"customer_id": customer["id"], "plan_id": usd["id"], "quantity": 0}, 400, "quantity"),
        ({"customer_id": customer["id"], "plan_id": usd["id"], "quantity": "2"}, 400, "quantity"),
        (
            {"customer_id": customer["id"], "plan_id": usd["id"], "trial_days": -1},
            400,
            "trial_days",
        ),
        ({"plan_id": usd["id"]}, 400, "customer_id"),
    ]
    for body, status, param in cases:
        response = await api.post("/v1/subscriptions", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["param"] == param, body
    assert (await api.get("/v1/subscriptions")).json()["data"] == []
    assert (await api.get("/v1/orders")).json()["data"] == []


async def test_bad_plan_input_is_4xx(billing, api) -> None:
    product = await billing.post("/v1/products", {"name": "Pro"})
    base = {"product_id": product["id"], "currency": "USD", "amount": 1000, "interval": "month"}
    for change, param in (
        ({"currency": "ZZZ"}, "currency"),
        ({"currency": "XAU"}, "currency"),
        ({"amount": -1}, "amount"),
        ({"amount": 10.5}, "amount"),
        ({"interval": "fortnight"}, "interval"),
        ({"interval_count": 0}, "interval_count"),
        ({"pricing_model": "magic"}, "pricing_model"),
        ({"product_id": "prod_missing"}, "product_id"),
    ):
        response = await api.post("/v1/plans", json={**base, **change})
        assert 400 <= response.status_code < 500, change
        assert response.json()["error"]["param"] == param, (change, response.text)
    assert (await api.get("/v1/plans")).json()["data"] == []


async def test_another_tenants_subscription_is_invisible(billing, other_tenant) -> None:
    plan = await billing.plan()
    customer = await billing.customer()
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    client = other_tenant.client
    assert (await client.get(f"/v1/subscriptions/{sub['id']}")).status_code == 404
    assert (await client.post(f"/v1/subscriptions/{sub['id']}/cancel", json={})).status_code == 404
    assert (await client.get(f"/v1/plans/{plan['id']}")).status_code == 404
    theirs = await client.post(
        "/v1/subscriptions", json={"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert theirs.status_code == 404


async def test_test_clock_rules(billing, api, other_tenant) -> None:
    clock = await billing.clock("2025-01-01T00:00:00Z")
    assert clock["status"] == "ready"
    backwards = await api.post(
        f"/v1/test-clocks/{clock['id']}/advance", json={"frozen_time": "2024-12-01T00:00:00Z"}
    )
    assert backwards.status_code == 400
    naive = await api.post("/v1/test-clocks", json={"frozen_time": "2025-01-01T00:00:00"})
    assert naive.status_code == 400
    theirs = await other_tenant.client.post(
        f"/v1/test-clocks/{clock['id']}/advance", json={"frozen_time": "2025-02-01T00:00:00Z"}
    )
    assert theirs.status_code == 404
    moved = await billing.advance(clock, "2025-02-01T00:00:00Z")
    assert moved["frozen_time"] == "2025-02-01T00:00:00Z"
    assert moved["status"] == "ready"
