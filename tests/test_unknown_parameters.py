"""A parameter the API does not define is refused, as Stripe refuses one, and nothing is done:
a misspelt field must never leave a request doing something else than what was meant."""

from __future__ import annotations


async def test_an_unknown_parameter_is_a_400_naming_it_and_changes_nothing(api) -> None:
    misspelt = await api.post("/v1/customers", json={"name": "Ada", "emial": "ada@example.com"})
    assert misspelt.status_code == 400, misspelt.text
    assert misspelt.json()["error"] == {
        "type": "invalid_request_error",
        "code": "parameter_unknown",
        "message": "received unknown parameter: emial",
        "param": "emial",
    }
    assert (await api.get("/v1/customers")).json()["data"] == []

    customer = (await api.post("/v1/customers", json={"name": "Ada", "currency": "USD"})).json()
    # Nested, and beside a valid field that would otherwise have been used.
    line = {"description": "Widget", "unit_amount": 900, "quantity": 1, "discount": 100}
    order = await api.post("/v1/orders", json={"customer_id": customer["id"], "lines": [line]})
    assert order.status_code == 400, order.text
    assert order.json()["error"]["param"] == "lines.0.discount"
    assert (await api.get("/v1/orders")).json()["data"] == []
    # Named before any other mistake in the same body.
    both = await api.post("/v1/products", json={"name": "", "activ": True})
    assert (both.status_code, both.json()["error"]["param"]) == (400, "activ")
