"""The original design's `POST /payment` and `GET /payment-status`: numbers, major units."""

from __future__ import annotations

import httpx
import pytest


async def test_pay_in_major_units_and_read_the_status(api, make_customer, attach) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    response = await api.post(
        "/payment", params={"customer_id": customer["number"], "amount": "12.34"}
    )
    assert response.status_code == 200, response.text
    payment = response.json()
    assert (payment["amount"], payment["currency"], payment["status"]) == (1234, "USD", "succeeded")
    assert payment["customer_id"] == customer["id"]
    fetched = (await api.get(f"/v1/payments/{payment['id']}")).json()
    assert [a["outcome"] for a in fetched.pop("attempts")] == ["succeeded"]
    fetched["attempts"] = None  # lists and events leave them out
    assert fetched == payment

    status = await api.get("/payment-status", params={"customer_id": customer["number"]})
    assert status.status_code == 200, status.text
    assert status.json() == {
        "customer_id": customer["number"],
        "payment_id": payment["id"],
        "status": "succeeded",
        "amount": 1234,
        "currency": "USD",
        "failure_code": None,
        "created": payment["created"],
    }


async def test_status_is_of_the_latest_payment(api, make_customer, attach) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    await api.post("/payment", params={"customer_id": customer["number"], "amount": "1"})
    await attach(customer["id"], "4000000000000341", set_default=True)
    declined = await api.post(
        "/payment", params={"customer_id": customer["number"], "amount": "2.50"}
    )
    assert declined.status_code == 402
    failed = declined.json()["error"]["payment"]
    assert (failed["amount"], failed["status"]) == (250, "failed")

    status = (await api.get("/payment-status", params={"customer_id": customer["number"]})).json()
    assert (status["payment_id"], status["status"], status["failure_code"]) == (
        failed["id"],
        "failed",
        "card_declined",
    )


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [("JPY", "500", 500), ("USD", "12.340", 1234), ("USD", "7", 700), ("KWD", "1.234", 1234)],
)
async def test_amounts_follow_the_currency_exponent(
    api, make_customer, attach, currency, amount, minor
) -> None:
    customer = await make_customer(currency=currency)
    await attach(customer["id"])
    response = await api.post(
        "/payment", params={"customer_id": customer["number"], "amount": amount}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["amount"], response.json()["currency"]) == (minor, currency)


@pytest.mark.parametrize(
    "amount",
    [
        "12.345",
        "0",
        "0.00",
        "-1",
        "abc",
        "1e3",
        "",
        " 1",
        "1,00",
        "NaN",
        "Infinity",
        "99999999999999999999",
        "\uff11\uff12",
    ],
)
async def test_bad_amounts_are_400(api, make_customer, attach, amount) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    response = await api.post(
        "/payment", params={"customer_id": customer["number"], "amount": amount}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "amount"
    assert (await api.get("/v1/payments")).json()["data"] == []


async def test_jpy_has_no_decimals(api, make_customer, attach) -> None:
    customer = await make_customer(currency="JPY")
    await attach(customer["id"])
    response = await api.post(
        "/payment", params={"customer_id": customer["number"], "amount": "5.5"}
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"customer_id": "1"},
        {"amount": "1"},
        {"customer_id": "one", "amount": "1"},
        {"customer_id": "0", "amount": "1"},
        {"customer_id": "1.5", "amount": "1"},
        {"customer_id": str(10**30), "amount": "1"},
        {"customer_id": "1", "amount": "1" * 41},
    ],
)
async def test_bad_parameters_are_400(api, make_customer, attach, params) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    assert customer["number"] == 1
    response = await api.post("/payment", params=params)
    assert response.status_code == 400, response.text
    assert (await api.get("/v1/payments")).json()["data"] == []
    if "amount" not in params:
        assert (await api.get("/payment-status", params=params)).status_code in (400, 404)


async def test_customer_without_currency_or_card(api, make_customer, attach) -> None:
    blank = await make_customer(currency=None)
    await attach(blank["id"])
    response = await api.post("/payment", params={"customer_id": blank["number"], "amount": "1"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "currency_missing"

    cardless = await make_customer()
    response = await api.post("/payment", params={"customer_id": cardless["number"], "amount": "1"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_payment_method"
    assert (await api.get("/v1/payments")).json()["data"] == []


async def test_unknown_customer_number_and_no_payment_yet(api, make_customer) -> None:
    customer = await make_customer()
    assert (
        await api.post("/payment", params={"customer_id": 999, "amount": "1"})
    ).status_code == 404
    assert (await api.get("/payment-status", params={"customer_id": 999})).status_code == 404
    none_yet = await api.get("/payment-status", params={"customer_id": customer["number"]})
    assert none_yet.status_code == 404
    assert none_yet.json()["error"]["param"] == "customer_id"


async def test_the_seed_endpoints_need_a_key(app, api, make_customer, attach) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    params = {"customer_id": customer["number"], "amount": "1"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://recur.test") as anonymous:
        assert (await anonymous.post("/payment", params=params)).status_code == 401
        status = await anonymous.get("/payment-status", params={"customer_id": 1})
        assert status.status_code == 401
        wrong = await anonymous.post(
            "/payment", params=params, headers={"Authorization": "Bearer sk_wrong"}
        )
        assert wrong.status_code == 401
    assert (await api.get("/v1/payments")).json()["data"] == []


async def test_customer_numbers_are_per_tenant(api, other_tenant, make_customer, attach) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    await api.post("/payment", params={"customer_id": customer["number"], "amount": "1"})
    other = other_tenant.client
    status = await other.get("/payment-status", params={"customer_id": customer["number"]})
    assert status.status_code == 404
    charge = await other.post("/payment", params={"customer_id": customer["number"], "amount": "1"})
    assert charge.status_code == 404
    assert len((await api.get("/v1/payments")).json()["data"]) == 1
