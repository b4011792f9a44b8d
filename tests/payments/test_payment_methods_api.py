"""Attaching cards: the sandbox's test cards, default card rules, detaching, isolation."""

from __future__ import annotations

import pytest


async def _methods(api, customer_id: str) -> list[dict]:
    response = await api.get(f"/v1/customers/{customer_id}/payment-methods")
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("4000000000000341", "visa"),  # attaches; every charge is declined (test_payments_api)
        ("5555555555554444", "mastercard"),
        ("378282246310005", "amex"),
        ("4242 4242 4242 4242", "visa"),
    ],
)
async def test_attach_keeps_only_brand_last4_and_expiry(
    api, make_customer, attach, number, brand
) -> None:
    customer = await make_customer()
    response = await attach(customer["id"], number, exp_month=3, exp_year=2041)
    assert response.status_code == 200, response.text
    method = response.json()
    assert method["id"].startswith("pm_")
    assert method["object"] == "payment_method"
    assert method["customer_id"] == customer["id"]
    assert method["gateway"] == "sandbox"
    assert method["card"] == {
        "brand": brand,
        "last4": number.replace(" ", "")[-4:],
        "exp_month": 3,
        "exp_year": 2041,
    }
    assert "number" not in response.text and "cvc" not in response.text
    assert "token" not in response.text  # the gateway token stays inside payments
    fetched = await api.get(f"/v1/customers/{customer['id']}/payment-methods/{method['id']}")
    assert fetched.json() == method


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000119", "processing_error"),
        ("4242424242424241", "incorrect_number"),
        ("4242abcd42424242", "incorrect_number"),
    ],
)
async def test_declined_cards_are_not_attached(api, make_customer, attach, number, code) -> None:
    customer = await make_customer()
    response = await attach(customer["id"], number)
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("card_error", code, "card")
    assert number not in response.text
    assert await _methods(api, customer["id"]) == []
    refreshed = (await api.get(f"/v1/customers/{customer['id']}")).json()
    assert refreshed["default_payment_method_id"] is None


async def test_expired_card_is_declined(api, make_customer, attach) -> None:
    customer = await make_customer()
    response = await attach(customer["id"], exp_month=1, exp_year=2020)
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "expired_card"
    assert await _methods(api, customer["id"]) == []


async def test_first_card_is_default_and_set_default_changes_it(api, make_customer, attach) -> None:
    customer = await make_customer()
    first = (await attach(customer["id"])).json()
    second = (await attach(customer["id"], "5555555555554444")).json()
    current = (await api.get(f"/v1/customers/{customer['id']}")).json()
    assert current["default_payment_method_id"] == first["id"]  # the second did not take over

    third = (await attach(customer["id"], "378282246310005", set_default=True)).json()
    current = (await api.get(f"/v1/customers/{customer['id']}")).json()
    assert current["default_payment_method_id"] == third["id"]

    # Newest first.
    assert [m["id"] for m in await _methods(api, customer["id"])] == [
        third["id"],
        second["id"],
        first["id"],
    ]

    patched = await api.patch(
        f"/v1/customers/{customer['id']}", json={"default_payment_method_id": second["id"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["default_payment_method_id"] == second["id"]


async def test_another_customers_card_cannot_be_the_default(api, make_customer, attach) -> None:
    alice = await make_customer()
    bob = await make_customer()
    alice_card = (await attach(alice["id"])).json()
    bob_card = (await attach(bob["id"])).json()

    response = await api.patch(
        f"/v1/customers/{bob['id']}", json={"default_payment_method_id": alice_card["id"]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "default_payment_method_id"
    unknown = await api.patch(
        f"/v1/customers/{bob['id']}", json={"default_payment_method_id": "pm_nope"}
    )
    assert unknown.status_code == 404
    assert (await api.get(f"/v1/customers/{bob['id']}")).json()[
        "default_payment_method_id"
    ] == bob_card["id"]
    # Nor is it visible under the other customer.
    other = await api.get(f"/v1/customers/{bob['id']}/payment-methods/{alice_card['id']}")
    assert other.status_code == 404


async def test_detach(api, make_customer, attach) -> None:
    customer = await make_customer()
    card = (await attach(customer["id"])).json()
    url = f"/v1/customers/{customer['id']}/payment-methods/{card['id']}"
    detached = await api.delete(url)
    assert detached.status_code == 200
    assert detached.json()["id"] == card["id"]
    assert (await api.get(url)).status_code == 404
    assert (await api.delete(url)).status_code == 404
    assert await _methods(api, customer["id"]) == []
    # A detached card cannot become the default again.
    response = await api.patch(
        f"/v1/customers/{customer['id']}", json={"default_payment_method_id": card["id"]}
    )
    assert response.status_code == 404


async def test_pagination(api, make_customer, attach) -> None:
    customer = await make_customer()
    ids = [(await attach(customer["id"])).json()["id"] for _ in range(3)]
    url = f"/v1/customers/{customer['id']}/payment-methods"
    page = (await api.get(url, params={"limit": 2})).json()
    assert [m["id"] for m in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = (await api.get(url, params={"limit": 2, "starting_after": ids[1]})).json()
    assert [m["id"] for m in rest["data"]] == [ids[0]]
    assert rest["has_more"] is False


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"card": None},
        {"card": {"number": "4242424242424242", "exp_month": 12}},
        {"card": {"number": "4242424242424242", "exp_month": 13, "exp_year": 2040}},
        {"card": {"number": "4242424242424242", "exp_month": 0, "exp_year": 2040}},
        {"card": {"number": "4242424242424242", "exp_month": "12", "exp_year": 2040}},
        {"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 1999}},
        {"card": {"number": 4242424242424242, "exp_month": 12, "exp_year": 2040}},
        {"card": {"number": "4242", "exp_month": 12, "exp_year": 2040}},
        {"card": {"number": "4" * 30, "exp_month": 12, "exp_year": 2040}},
        {"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "1"}},
        {"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "12x"}},
        {"card": {"number": "4242424242424242\u0000", "exp_month": 12, "exp_year": 2040}},
        {
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040},
            "set_default": "maybe",
        },
        [],
        "4242424242424242",
    ],
)
async def test_bad_input_is_a_4xx_and_stores_nothing(api, make_customer, body) -> None:
    customer = await make_customer()
    response = await api.post(f"/v1/customers/{customer['id']}/payment-methods", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()
    assert "4242424242424242" not in response.text
    assert await _methods(api, customer["id"]) == []


async def test_unknown_customer(api, attach) -> None:
    for customer_id in ("cus_nope", "cus%00x", "x" * 65):
        response = await attach(customer_id)
        assert response.status_code in (400, 404), response.text
        assert (await api.get(f"/v1/customers/{customer_id}/payment-methods")).status_code in (
            400,
            404,
        )


async def test_not_json(api, make_customer) -> None:
    customer = await make_customer()
    response = await api.post(
        f"/v1/customers/{customer['id']}/payment-methods",
        content=b"number=4242424242424242",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert 400 <= response.status_code < 500
    assert "4242424242424242" not in response.text


async def test_another_tenants_cards_are_not_found(
    api, other_tenant, make_customer, attach
) -> None:
    customer = await make_customer()
    card = (await attach(customer["id"])).json()
    other = other_tenant.client
    base = f"/v1/customers/{customer['id']}/payment-methods"
    assert (await other.get(base)).status_code == 404
    assert (await other.get(f"{base}/{card['id']}")).status_code == 404
    assert (await other.delete(f"{base}/{card['id']}")).status_code == 404
    assert (await attach(customer["id"], client=other)).status_code == 404
    # Its own customer cannot take the card either.
    theirs = await make_customer(client=other)
    response = await other.patch(
        f"/v1/customers/{theirs['id']}", json={"default_payment_method_id": card["id"]}
    )
    assert response.status_code == 404
    assert len(await _methods(api, customer["id"])) == 1
