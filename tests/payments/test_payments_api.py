"""Payments: by amount and by order, every test card at charge, declines, isolation, bad input."""

from __future__ import annotations

import asyncio
import json

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from recur.kit.errors import Conflict, InvalidRequest
from recur.kit.ids import new_id
from recur.payments import repository as repo
from recur.payments.tables import outbox

GOOD = "4242424242424242"
DECLINES_ON_CHARGE = "4000000000000341"


def card(number: str) -> dict:
    return {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}


async def _payments(api, **params) -> list[dict]:
    response = await api.get("/v1/payments", params=params)
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _events(runtime, type_: str) -> list[dict]:
    async with runtime.uow() as uow:
        rows = await uow.fetch_all(sa.select(outbox).where(outbox.c.type == type_))
    return [row.payload for row in rows]


async def test_pay_an_amount_with_the_default_card(api, runtime, make_customer, attach) -> None:
    customer = await make_customer()
    method = (await attach(customer["id"])).json()
    response = await api.post(
        "/v1/payments",
        json={
            "customer_id": customer["id"],
            "amount": 1234,
            "currency": "usd",
            "description": "Top-up",
        },
    )
    assert response.status_code == 200, response.text
    payment = response.json()
    assert payment["id"].startswith("pay_")
    assert payment["object"] == "payment"
    assert payment["status"] == "succeeded"
    assert (payment["amount"], payment["currency"]) == (1234, "USD")
    assert payment["customer_id"] == customer["id"]
    assert payment["order_id"] is None
    assert payment["payment_method_id"] == method["id"]
    assert payment["gateway"] == "sandbox"
    assert payment["gateway_reference"].startswith("ch_sandbox_")
    assert (payment["failure_code"], payment["failure_message"]) == (None, None)
    assert (payment["amount_refunded"], payment["refunded"]) == (0, False)
    assert payment["description"] == "Top-up"

    fetched = (await api.get(f"/v1/payments/{payment['id']}")).json()
    # Retrieving one payment also shows its attempts at the gateways.
    [attempt] = fetched.pop("attempts")
    fetched["attempts"] = None  # lists and events leave them out
    assert (attempt["number"], attempt["gateway"]) == (1, "sandbox")
    assert attempt["outcome"] == "succeeded"
    assert attempt["idempotency_key"] == f"{payment['id']}-1"
    assert attempt["gateway_reference"] == payment["gateway_reference"]
    assert fetched == payment
    assert payment["routing_reason"] == "no rule matched: default sandbox"
    assert payment["routing_rule_id"] is None
    assert [p["id"] for p in await _payments(api, customer_id=customer["id"])] == [payment["id"]]
    assert await _events(runtime, "payment.succeeded") == [payment]

    history = (await api.get(f"/v1/customers/{customer['id']}/billing-history")).json()["data"]
    assert [(h["id"], h["object"], h["status"], h["amount"]) for h in history] == [
        (payment["id"], "payment", "succeeded", 1234)
    ]


async def test_currency_defaults_to_the_customers_and_is_adopted(
    api, make_customer, attach
) -> None:
    usd = await make_customer()
    await attach(usd["id"])
    response = await api.post("/v1/payments", json={"customer_id": usd["id"], "amount": 500})
    assert response.status_code == 200, response.text
    assert response.json()["currency"] == "USD"

    blank = await make_customer(currency=None)
    await attach(blank["id"])
    missing = await api.post("/v1/payments", json={"customer_id": blank["id"], "amount": 500})
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "currency"

    eur = await api.post(
        "/v1/payments", json={"customer_id": blank["id"], "amount": 500, "currency": "eur"}
    )
    assert eur.status_code == 200, eur.text
    assert (await api.get(f"/v1/customers/{blank['id']}")).json()["currency"] == "EUR"

    mismatch = await api.post(
        "/v1/payments", json={"customer_id": blank["id"], "amount": 500, "currency": "USD"}
    )
    assert mismatch.status_code == 400
    assert mismatch.json()["error"]["code"] == "currency_mismatch"
    assert len(await _payments(api, customer_id=blank["id"])) == 1


async def test_saved_card_that_declines_every_charge(api, runtime, make_customer, attach) -> None:
    customer = await make_customer()
    method = (await attach(customer["id"], DECLINES_ON_CHARGE)).json()
    response = await api.post(
        "/v1/payments", json={"customer_id": customer["id"], "amount": 700, "currency": "USD"}
    )
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("card_error", "card_declined")
    failed = error["payment"]
    assert failed["status"] == "failed"
    assert failed["failure_code"] == "card_declined"
    assert failed["failure_message"]
    assert failed["payment_method_id"] == method["id"]
    assert failed["gateway_reference"].startswith("ch_sandbox_")
    stored = (await api.get(f"/v1/payments/{failed['id']}")).json()
    assert [a["outcome"] for a in stored.pop("attempts")] == ["declined"]
    stored["attempts"] = None  # lists and events leave them out
    assert stored == failed
    assert await _events(runtime, "payment.failed") == [failed]
    assert await _events(runtime, "payment.succeeded") == []


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000119", "processing_error"),
        ("4000000000000341", "card_declined"),
        ("4242424242424241", "incorrect_number"),
    ],
)
async def test_one_off_cards_that_decline_leave_a_failed_payment(
    api, make_customer, number, code
) -> None:
    customer = await make_customer()
    response = await api.post(
        "/v1/payments",
        json={
            "customer_id": customer["id"],
            "amount": 900,
            "currency": "USD",
            "card": card(number),
        },
    )
    assert response.status_code == 402, response.text
    assert response.json()["error"]["code"] == code
    assert number not in response.text
    failed = response.json()["error"]["payment"]
    assert (failed["status"], failed["failure_code"]) == ("failed", code)
    assert failed["payment_method_id"] is None
    assert (await api.get(f"/v1/payments/{failed['id']}")).json()["status"] == "failed"
    # A one-off card is never saved.
    methods = await api.get(f"/v1/customers/{customer['id']}/payment-methods")
    assert methods.json()["data"] == []


async def test_one_off_card_succeeds_and_is_not_saved(api, make_customer) -> None:
    customer = await make_customer()
    response = await api.post(
        "/v1/payments",
        json={"customer_id": customer["id"], "amount": 900, "card": card("5555555555554444")},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    assert response.json()["payment_method_id"] is None
    methods = await api.get(f"/v1/customers/{customer['id']}/payment-methods")
    assert methods.json()["data"] == []
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()[
        "default_payment_method_id"
    ] is None


async def test_choosing_a_payment_method(api, make_customer, attach) -> None:
    alice = await make_customer()
    bob = await make_customer()
    await attach(alice["id"], DECLINES_ON_CHARGE)  # the default, which would be declined
    good = (await attach(alice["id"], GOOD)).json()
    bobs = (await attach(bob["id"])).json()

    body = {"customer_id": alice["id"], "amount": 100, "currency": "USD"}
    chosen = await api.post("/v1/payments", json={**body, "payment_method_id": good["id"]})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["payment_method_id"] == good["id"]

    others = await api.post("/v1/payments", json={**body, "payment_method_id": bobs["id"]})
    assert others.status_code == 400
    assert others.json()["error"]["param"] == "payment_method_id"
    unknown = await api.post("/v1/payments", json={**body, "payment_method_id": "pm_nope"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "payment_method_id"
    both = await api.post(
        "/v1/payments", json={**body, "payment_method_id": good["id"], "card": card(GOOD)}
    )
    assert both.status_code == 400
    assert len(await _payments(api, customer_id=alice["id"])) == 1


async def test_no_payment_method(api, make_customer, attach) -> None:
    customer = await make_customer()
    body = {"customer_id": customer["id"], "amount": 100, "currency": "USD"}
    response = await api.post("/v1/payments", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_payment_method"

    # The default card detached: still no payment method.
    method = (await attach(customer["id"])).json()
    await api.delete(f"/v1/customers/{customer['id']}/payment-methods/{method['id']}")
    response = await api.post("/v1/payments", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_payment_method"
    assert await _payments(api) == []


async def test_pay_an_order(api, runtime, make_customer, attach, make_order) -> None:
    customer = await make_customer()
    method = (await attach(customer["id"])).json()
    order = await make_order(customer["id"], unit_amount=1000)
    assert (order["status"], order["amount_due"]) == ("open", 1000)

    response = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert response.status_code == 200, response.text
    payment = response.json()
    assert (payment["status"], payment["amount"], payment["currency"]) == ("succeeded", 1000, "USD")
    assert (payment["order_id"], payment["customer_id"]) == (order["id"], customer["id"])
    assert payment["payment_method_id"] == method["id"]

    paid = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (paid["status"], paid["amount_due"]) == ("paid", 0)

    again = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert again.status_code == 409
    assert again.json()["error"]["param"] == "order_id"
    payments = await _payments(api, order_id=order["id"])
    assert [(p["id"], p["status"]) for p in payments] == [(payment["id"], "succeeded")]


async def test_order_payment_details_must_match(api, make_customer, attach, make_order) -> None:
    customer = await make_customer()
    other = await make_customer()
    await attach(customer["id"])
    order = await make_order(customer["id"], unit_amount=1000)
    for body, param in [
        ({"amount": 999}, "amount"),
        ({"currency": "EUR"}, "currency"),
        ({"currency": "ZZZ"}, "currency"),
        ({"customer_id": other["id"]}, "customer_id"),
    ]:
        response = await api.post("/v1/payments", json={"order_id": order["id"], **body})
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param
    # Matching details are fine.
    response = await api.post(
        "/v1/payments",
        json={
            "order_id": order["id"],
            "amount": 1000,
            "currency": "usd",
            "customer_id": customer["id"],
        },
    )
    assert response.status_code == 200, response.text

    unknown = await api.post("/v1/payments", json={"order_id": "ord_nope"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["param"] == "order_id"


async def test_an_order_not_open_cannot_be_paid(api, make_customer, attach, make_order) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    order = await make_order(customer["id"])
    assert (await api.post(f"/v1/orders/{order['id']}/void")).status_code == 200
    response = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert response.status_code == 409
    assert await _payments(api) == []


async def test_declined_order_payment_can_be_retried(
    api, make_customer, attach, make_order
) -> None:
    customer = await make_customer()
    await attach(customer["id"], DECLINES_ON_CHARGE)
    order = await make_order(customer["id"], unit_amount=2500)
    declined = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert declined.status_code == 402
    assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "open"

    await attach(customer["id"], GOOD, set_default=True)
    retried = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert retried.status_code == 200, retried.text
    assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "paid"
    statuses = sorted(p["status"] for p in await _payments(api, order_id=order["id"]))
    assert statuses == ["failed", "succeeded"]


async def test_concurrent_payments_of_one_order_charge_once(
    api, make_customer, attach, make_order
) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    order = await make_order(customer["id"])
    responses = await asyncio.gather(
        *(api.post("/v1/payments", json={"order_id": order["id"]}) for _ in range(4))
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 409, 409, 409], [r.text for r in responses]
    succeeded = [
        p for p in await _payments(api, order_id=order["id"]) if p["status"] == "succeeded"
    ]
    assert len(succeeded) == 1


async def test_database_refuses_a_second_active_payment_of_an_order(runtime, tenant) -> None:
    now = runtime.clock.now()

    def row(status: str) -> dict:
        return {
            "id": new_id("pay"),
            "tenant_id": tenant.id,
            "customer_id": "cus_1",
            "order_id": "ord_1",
            "amount": 100,
            "currency": "USD",
            "status": status,
            "amount_refunded": 0,
            "gateway": "sandbox",
            "created": now,
            "updated": now,
        }

    async with runtime.uow() as uow:
        await repo.insert_payment(uow, row("failed"))
        await repo.insert_payment(uow, row("failed"))  # failures do not count
        await repo.insert_payment(uow, row("pending"))
        await uow.commit()
    for status in ("pending", "succeeded"):
        with pytest.raises(IntegrityError):
            async with runtime.uow() as uow:
                await repo.insert_payment(uow, row(status))
                await uow.commit()


async def test_charge_order_client(api, runtime, tenant, make_customer, attach, make_order) -> None:
    customer = await make_customer()
    order = await make_order(customer["id"])
    with pytest.raises(InvalidRequest) as missing:
        await runtime.payments.charge_order(tenant.id, order["id"])
    assert missing.value.code == "no_payment_method"

    await attach(customer["id"], DECLINES_ON_CHARGE)
    failed = await runtime.payments.charge_order(tenant.id, order["id"])  # no exception
    assert (failed.status, failed.failure_code, failed.order_id) == (
        "failed",
        "card_declined",
        order["id"],
    )

    await attach(customer["id"], GOOD, set_default=True)
    paid = await runtime.payments.charge_order(tenant.id, order["id"])
    assert paid.status == "succeeded"
    with pytest.raises(Conflict):
        await runtime.payments.charge_order(tenant.id, order["id"])


async def test_same_idempotency_key_charges_once(api, make_customer, attach) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    body = {"customer_id": customer["id"], "amount": 4200, "currency": "USD"}
    headers = {"Idempotency-Key": "order-42-attempt-1"}
    first = await api.post("/v1/payments", json=body, headers=headers)
    second = await api.post("/v1/payments", json=body, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json() == first.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(await _payments(api, customer_id=customer["id"])) == 1

    other_body = await api.post("/v1/payments", json={**body, "amount": 4300}, headers=headers)
    assert other_body.status_code == 409
    assert len(await _payments(api, customer_id=customer["id"])) == 1


async def test_a_declined_payment_is_replayed_too(api, make_customer, attach) -> None:
    customer = await make_customer()
    await attach(customer["id"], DECLINES_ON_CHARGE)
    body = {"customer_id": customer["id"], "amount": 4200}
    headers = {"Idempotency-Key": "k-declined"}
    first = await api.post("/v1/payments", json=body, headers=headers)
    second = await api.post("/v1/payments", json=body, headers=headers)
    assert first.status_code == second.status_code == 402
    assert second.json() == first.json()
    assert len(await _payments(api)) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"amount": 100, "currency": "USD"},
        {"customer_id": "CUSTOMER", "amount": 100, "currency": "USD"},
        {"customer_id": "cus_nope", "amount": 100, "currency": "USD"},
        {"customer_id": "cus_\u0000", "amount": 100, "currency": "USD"},
        {"customer_id": "x" * 65, "amount": 100, "currency": "USD"},
        {"customer_id": "$C", "currency": "USD"},
        {"customer_id": "$C", "amount": 0, "currency": "USD"},
        {"customer_id": "$C", "amount": -5, "currency": "USD"},
        {"customer_id": "$C", "amount": 1.5, "currency": "USD"},
        {"customer_id": "$C", "amount": "100", "currency": "USD"},
        {"customer_id": "$C", "amount": True, "currency": "USD"},
        {"customer_id": "$C", "amount": 2**63, "currency": "USD"},
        {"customer_id": "$C", "amount": 10**40, "currency": "USD"},
        {"customer_id": "$C", "amount": 100, "currency": "US"},
        {"customer_id": "$C", "amount": 100, "currency": "XAU"},
        {"customer_id": "$C", "amount": 100, "currency": 840},
        {"customer_id": "$C", "amount": 100, "currency": "USD", "description": "a\u0000b"},
        {"customer_id": "$C", "amount": 100, "currency": "USD", "description": "\ud800"},
        {"customer_id": "$C", "amount": 100, "currency": "USD", "description": "x" * 501},
        {"customer_id": "$C", "amount": 100, "currency": "USD", "payment_method_id": "pm_\u0000"},
        {"customer_id": "$C", "amount": 100, "currency": "USD", "card": {"number": "4242"}},
        {"customer_id": "$C", "amount": 100, "currency": "USD", "card": "tok_visa"},
        {"order_id": "ord_nope"},
        {"order_id": "ord_\u0000"},
        {"order_id": None, "customer_id": None},
        [],
        None,
    ],
)
async def test_bad_input_is_a_4xx_and_charges_nothing(api, make_customer, attach, body) -> None:
    customer = await make_customer()
    await attach(customer["id"])
    if isinstance(body, dict) and body.get("customer_id") == "$C":
        body = {**body, "customer_id": customer["id"]}
    # Encoded by hand: JSON may escape a lone surrogate, which httpx refuses to encode.
    response = await api.post(
        "/v1/payments", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert await _payments(api) == []
    assert (await api.get(f"/v1/customers/{customer['id']}")).json()["currency"] == "USD"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/payments/pay_nope",
        "/v1/payments/pay_%00",
        "/v1/payments/%F0%9F%92%B3",
        "/v1/payments?limit=0",
        "/v1/payments?limit=101",
        "/v1/payments?limit=x",
        "/v1/payments?starting_after=%00",
        "/v1/payments?customer_id=%00",
        "/v1/payments?order_id=" + "o" * 65,
    ],
)
async def test_bad_reads_are_4xx(api, path) -> None:
    response = await api.get(path)
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()


async def test_list_filters_and_pagination(api, make_customer, attach, make_order) -> None:
    alice = await make_customer()
    bob = await make_customer()
    await attach(alice["id"])
    await attach(bob["id"])
    body = {"amount": 100, "currency": "USD"}
    ids = [
        (await api.post("/v1/payments", json={**body, "customer_id": alice["id"]})).json()["id"]
        for _ in range(3)
    ]
    order = await make_order(bob["id"])
    bobs = (await api.post("/v1/payments", json={"order_id": order["id"]})).json()

    assert [p["id"] for p in await _payments(api)] == [bobs["id"], *ids[::-1]]
    assert [p["id"] for p in await _payments(api, customer_id=alice["id"])] == ids[::-1]
    assert [p["id"] for p in await _payments(api, order_id=order["id"])] == [bobs["id"]]
    page = (await api.get("/v1/payments", params={"limit": 2, "starting_after": ids[2]})).json()
    assert [p["id"] for p in page["data"]] == [ids[1], ids[0]]
    assert page["has_more"] is False


async def test_another_tenants_payments_are_not_found(
    api, other_tenant, make_customer, attach, make_order
) -> None:
    customer = await make_customer()
    method = (await attach(customer["id"])).json()
    order = await make_order(customer["id"])
    payment = (
        await api.post("/v1/payments", json={"customer_id": customer["id"], "amount": 100})
    ).json()
    other = other_tenant.client

    assert (await other.get(f"/v1/payments/{payment['id']}")).status_code == 404
    assert (await other.get("/v1/payments")).json()["data"] == []
    assert (await other.get("/v1/payments", params={"customer_id": customer["id"]})).json()[
        "data"
    ] == []
    charge_theirs = await other.post(
        "/v1/payments", json={"customer_id": customer["id"], "amount": 100, "currency": "USD"}
    )
    assert charge_theirs.status_code == 404
    assert (await other.post("/v1/payments", json={"order_id": order["id"]})).status_code == 404
    own = await make_customer(client=other)
    with_their_card = await other.post(
        "/v1/payments",
        json={"customer_id": own["id"], "amount": 100, "payment_method_id": method["id"]},
    )
    assert with_their_card.status_code == 404
    assert (await other.get("/v1/payments")).json()["data"] == []
    assert len(await _payments(api)) == 1
