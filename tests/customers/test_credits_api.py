"""Customer credit balance by hand."""

from __future__ import annotations


async def test_credits_add_up_and_are_listed(api) -> None:
    customer = (await api.post("/v1/customers", json={"currency": "EUR"})).json()
    first = await api.post(f"/v1/customers/{customer['id']}/credits", json={"amount": 500})
    assert first.status_code == 200
    assert (first.json()["currency"], first.json()["ending_balance"]) == ("EUR", 500)
    second = await api.post(
        f"/v1/customers/{customer['id']}/credits",
        json={"amount": 250, "currency": "eur", "description": "goodwill"},
    )
    assert second.json()["ending_balance"] == 750
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["balance"] == 750
    listed = (await api.get(f"/v1/customers/{customer['id']}/credits")).json()["data"]
    assert [c["amount"] for c in listed] == [250, 500]


async def test_bad_credits_are_refused_and_change_nothing(api, other_tenant) -> None:
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    path = f"/v1/customers/{customer['id']}/credits"
    for body, param in (
        ({"amount": 0}, "amount"),
        ({"amount": -5}, "amount"),
        ({"amount": "5"}, "amount"),
        ({"amount": 5, "currency": "EUR"}, "currency"),
        ({"amount": 5, "currency": "ZZZ"}, "currency"),
        ({}, "amount"),
    ):
        response = await api.post(path, json=body)
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param
    assert (
        await api.post("/v1/customers/cus_missing/credits", json={"amount": 1})
    ).status_code == 404
    assert (await other_tenant.client.post(path, json={"amount": 1})).status_code == 404
    no_currency = (await api.post("/v1/customers", json={})).json()
    refused = await api.post(f"/v1/customers/{no_currency['id']}/credits", json={"amount": 1})
    assert refused.status_code == 400
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["balance"] == 0


async def test_credit_is_spent_on_the_next_orders_before_any_charge(api) -> None:
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2099}
    await api.post(f"/v1/customers/{customer['id']}/payment-methods", json={"card": card})
    await api.post(f"/v1/customers/{customer['id']}/credits", json={"amount": 500})

    small = (
        await api.post(
            "/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "a", "unit_amount": 300}],
            },
        )
    ).json()
    assert (small["status"], small["credit_applied"], small["amount_due"]) == ("paid", 300, 0)

    product = (await api.post("/v1/products", json={"name": "Pro"})).json()
    plan = (
        await api.post(
            "/v1/plans",
            json={
                "product_id": product["id"],
                "currency": "USD",
                "amount": 1200,
                "interval": "month",
            },
        )
    ).json()
    sub = (
        await api.post(
            "/v1/subscriptions", json={"customer_id": customer["id"], "plan_id": plan["id"]}
        )
    ).json()
    assert sub["status"] == "active"
    order = (await api.get(f"/v1/orders/{sub['latest_order_id']}")).json()
    assert (order["credit_applied"], order["amount_paid"], order["status"]) == (200, 1000, "paid")
    payments = (await api.get("/v1/payments", params={"order_id": order["id"]})).json()["data"]
    assert [p["amount"] for p in payments] == [1000]
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["balance"] == 0
    spent = (await api.get(f"/v1/customers/{customer['id']}/credits")).json()["data"]
    assert [(c["type"], c["amount"]) for c in spent] == [
        ("applied_to_order", -200),
        ("applied_to_order", -300),
        ("manual", 500),
    ]
