"""The README's tour, end to end through the gateway: one tenant's whole billing life."""

from __future__ import annotations

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}


def card(number: str) -> dict[str, object]:
    return {**CARD, "number": number}


async def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_tour(api, other_tenant) -> None:
    clock = await ok(
        await api.post("/v1/test-clocks", json={"frozen_time": "2024-01-31T09:00:00Z"})
    )
    customer = await ok(
        await api.post(
            "/v1/customers",
            json={
                "email": "ada@example.com",
                "name": "Ada Lovelace",
                "currency": "USD",
                "test_clock_id": clock["id"],
            },
        )
    )
    method = await ok(
        await api.post(f"/v1/customers/{customer['id']}/payment-methods", json={"card": CARD})
    )
    assert method["card"] == {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2040}
    customer = await ok(await api.get(f"/v1/customers/{customer['id']}"))
    assert customer["default_payment_method_id"] == method["id"]

    product = await ok(await api.post("/v1/products", json={"name": "Recur Pro"}))
    plan = await ok(
        await api.post(
            "/v1/plans",
            json={
                "product_id": product["id"],
                "currency": "USD",
                "amount": 1999,
                "interval": "month",
            },
        )
    )
    sub = await ok(
        await api.post(
            "/v1/subscriptions",
            json={
                "customer_id": customer["id"],
                "plan_id": plan["id"],
                "quantity": 1,
            },
        )
    )
    assert sub["status"] == "active"

    order = await ok(await api.get(f"/v1/orders/{sub['latest_order_id']}"))
    assert (order["number"], order["status"], order["total"]) == (1, "paid", 1999)
    invoice = await api.get(f"/v1/orders/{order['id']}/invoice")
    assert invoice.status_code == 200
    assert invoice.headers["content-type"].startswith("text/html")
    assert "19.99" in invoice.text and "Ada Lovelace" in invoice.text

    # A year of renewals in one call.
    await ok(
        await api.post(
            f"/v1/test-clocks/{clock['id']}/advance", json={"frozen_time": "2025-01-31T09:00:00Z"}
        )
    )
    orders = (
        await ok(await api.get("/v1/orders", params={"subscription_id": sub["id"], "limit": 100}))
    )["data"]
    assert len(orders) == 13
    assert sorted(o["number"] for o in orders) == list(range(1, 14))
    assert {o["status"] for o in orders} == {"paid"}

    # One-off payment, partial refunds, then too large a refund.
    payment = await ok(
        await api.post(
            "/v1/payments",
            json={
                "customer_id": customer["id"],
                "amount": 5000,
                "currency": "USD",
            },
            headers={"Idempotency-Key": "tour-payment"},
        )
    )
    assert payment["status"] == "succeeded"
    await ok(await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 1500}))
    await ok(await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 500}))
    too_much = await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 3001})
    assert too_much.status_code == 400
    payment = await ok(await api.get(f"/v1/payments/{payment['id']}"))
    assert payment["amount_refunded"] == 2000

    # The original design's endpoints.
    seeded = await ok(
        await api.post("/payment", params={"customer_id": customer["number"], "amount": "12.34"})
    )
    assert (seeded["amount"], seeded["currency"], seeded["status"]) == (1234, "USD", "succeeded")
    status = await ok(await api.get("/payment-status", params={"customer_id": customer["number"]}))
    assert (status["payment_id"], status["status"]) == (seeded["id"], "succeeded")

    history = (
        await ok(
            await api.get(f"/v1/customers/{customer['id']}/billing-history", params={"limit": 100})
        )
    )["data"]
    kinds = {(h["object"], h["status"]) for h in history}
    assert ("order", "paid") in kinds
    assert ("payment", "succeeded") in kinds
    assert ("payment", "partially_refunded") in kinds
    assert sum(1 for h in history if h["object"] == "refund") == 2
    assert sum(1 for h in history if h["object"] == "order") == 13

    # None of it is visible to another tenant.
    for path in (
        f"/v1/customers/{customer['id']}",
        f"/v1/subscriptions/{sub['id']}",
        f"/v1/orders/{order['id']}",
        f"/v1/payments/{payment['id']}",
        f"/v1/orders/{order['id']}/invoice",
        f"/v1/test-clocks/{clock['id']}",
    ):
        assert (await other_tenant.client.get(path)).status_code == 404, path
    assert (
        await other_tenant.client.get("/payment-status", params={"customer_id": customer["number"]})
    ).status_code == 404


async def test_every_sandbox_card(api) -> None:
    customer = await ok(await api.post("/v1/customers", json={"currency": "USD"}))
    attach = f"/v1/customers/{customer['id']}/payment-methods"
    for number, code in (
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000119", "processing_error"),
    ):
        refused = await api.post(attach, json={"card": card(number)})
        assert refused.status_code == 402, number
        assert refused.json()["error"]["code"] == code
        # Charged once without being kept, the card's failure is a recorded failed payment.
        charged = await api.post(
            "/v1/payments",
            json={
                "customer_id": customer["id"],
                "amount": 700,
                "currency": "USD",
                "card": card(number),
            },
        )
        assert charged.status_code == 402
        failed = charged.json()["error"]["payment"]
        assert (failed["status"], failed["failure_code"]) == ("failed", code)
        fetched = await ok(await api.get(f"/v1/payments/{failed['id']}"))
        assert fetched["status"] == "failed"
    assert (await ok(await api.get(attach)))["data"] == []

    declining = await ok(await api.post(attach, json={"card": card("4000000000000341")}))
    declined = await api.post(
        "/v1/payments",
        json={
            "customer_id": customer["id"],
            "amount": 700,
            "currency": "USD",
        },
    )
    assert declined.status_code == 402
    assert declined.json()["error"]["payment"]["payment_method_id"] == declining["id"]
    assert declined.json()["error"]["code"] == "card_declined"

    good = await ok(await api.post(attach, json={"card": CARD, "set_default": True}))
    paid = await ok(
        await api.post(
            "/v1/payments",
            json={
                "customer_id": customer["id"],
                "amount": 700,
                "currency": "USD",
            },
        )
    )
    assert (paid["status"], paid["payment_method_id"]) == ("succeeded", good["id"])
