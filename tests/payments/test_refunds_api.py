"""Refunds: full, partial, repeated, too large, of a failed payment, and their events."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from recur.payments.tables import outbox


@pytest.fixture
async def payment(api, make_customer, attach, make_order) -> dict:
    """A succeeded payment of 1000 USD for an order."""
    customer = await make_customer()
    await attach(customer["id"])
    order = await make_order(customer["id"], unit_amount=1000)
    response = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert response.status_code == 200, response.text
    return response.json()


async def _refund(api, payment_id: str, **body) -> dict:
    response = await api.post("/v1/refunds", json={"payment_id": payment_id, **body})
    assert response.status_code == 200, response.text
    return response.json()


async def _payment(api, payment_id: str) -> dict:
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    payment["attempts"] = None  # shown only when one payment is retrieved
    return payment


async def test_full_refund(api, runtime, payment) -> None:
    refund = await _refund(api, payment["id"], reason="requested_by_customer")
    assert refund["id"].startswith("re_")
    assert refund["object"] == "refund"
    assert (refund["amount"], refund["currency"], refund["status"]) == (1000, "USD", "succeeded")
    assert (refund["payment_id"], refund["reason"]) == (payment["id"], "requested_by_customer")
    assert (await api.get(f"/v1/refunds/{refund['id']}")).json() == refund

    refunded = await _payment(api, payment["id"])
    assert (refunded["amount_refunded"], refunded["refunded"]) == (1000, True)
    assert refunded["status"] == "succeeded"

    async with runtime.uow() as uow:
        rows = await uow.fetch_all(sa.select(outbox).order_by(outbox.c.created, outbox.c.id))
    events = {row.type: row.payload for row in rows}
    assert events["refund.created"] == {
        **refund,
        "customer_id": payment["customer_id"],
        "order_id": payment["order_id"],
    }
    assert events["payment.refunded"] == refunded

    history = (await api.get(f"/v1/customers/{payment['customer_id']}/billing-history")).json()[
        "data"
    ]
    entries = {entry["id"]: entry for entry in history}
    assert entries[refund["id"]]["object"] == "refund"
    assert entries[payment["id"]]["status"] == "refunded"

    again = await api.post("/v1/refunds", json={"payment_id": payment["id"]})
    assert again.status_code == 409


async def test_partial_refunds_add_up(api, payment) -> None:
    first = await _refund(api, payment["id"], amount=300)
    assert first["amount"] == 300
    partly = await _payment(api, payment["id"])
    assert (partly["amount_refunded"], partly["refunded"]) == (300, False)

    second = await _refund(api, payment["id"], amount=200)
    assert (await _payment(api, payment["id"]))["amount_refunded"] == 500

    too_large = await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 501})
    assert too_large.status_code == 400
    error = too_large.json()["error"]
    assert (error["param"], error["code"]) == ("amount", "amount_too_large")
    assert (await _payment(api, payment["id"]))["amount_refunded"] == 500

    rest = await _refund(api, payment["id"])  # what is left
    assert rest["amount"] == 500
    done = await _payment(api, payment["id"])
    assert (done["amount_refunded"], done["refunded"]) == (1000, True)

    listed = (await api.get("/v1/refunds", params={"payment_id": payment["id"]})).json()
    assert [r["id"] for r in listed["data"]] == [rest["id"], second["id"], first["id"]]


async def test_refund_larger_than_the_payment(api, payment) -> None:
    response = await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 1001})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "amount_too_large"
    assert (await api.get("/v1/refunds")).json()["data"] == []


async def test_concurrent_refunds_never_exceed_the_payment(api, payment) -> None:
    responses = await asyncio.gather(
        *(
            api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 400})
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 400, 400]
    assert (await _payment(api, payment["id"]))["amount_refunded"] == 800


async def test_a_failed_payment_cannot_be_refunded(api, make_customer, attach) -> None:
    customer = await make_customer()
    await attach(customer["id"], "4000000000000341")
    declined = await api.post("/v1/payments", json={"customer_id": customer["id"], "amount": 100})
    failed = declined.json()["error"]["payment"]
    response = await api.post("/v1/refunds", json={"payment_id": failed["id"]})
    assert 400 <= response.status_code < 500
    assert response.status_code == 409
    assert (await api.get("/v1/refunds")).json()["data"] == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"payment_id": "pay_nope"},
        {"payment_id": "pay_\u0000"},
        {"payment_id": "$P", "amount": 0},
        {"payment_id": "$P", "amount": -1},
        {"payment_id": "$P", "amount": 1.5},
        {"payment_id": "$P", "amount": "100"},
        {"payment_id": "$P", "amount": 2**64},
        {"payment_id": "$P", "reason": "because"},
        {"payment_id": None},
        [],
    ],
)
async def test_bad_refunds_are_4xx_and_change_nothing(api, payment, body) -> None:
    if isinstance(body, dict) and body.get("payment_id") == "$P":
        body = {**body, "payment_id": payment["id"]}
    response = await api.post("/v1/refunds", json=body)
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()
    assert (await api.get("/v1/refunds")).json()["data"] == []
    assert (await _payment(api, payment["id"]))["amount_refunded"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/v1/refunds/re_nope",
        "/v1/refunds/re_%00",
        "/v1/refunds?payment_id=%00",
        "/v1/refunds?starting_after=%00",
        "/v1/refunds?limit=1000",
    ],
)
async def test_bad_refund_reads_are_4xx(api, path) -> None:
    response = await api.get(path)
    assert 400 <= response.status_code < 500, response.text


async def test_another_tenants_refunds_are_not_found(api, other_tenant, payment) -> None:
    refund = await _refund(api, payment["id"], amount=100)
    other = other_tenant.client
    assert (await other.get(f"/v1/refunds/{refund['id']}")).status_code == 404
    assert (await other.get("/v1/refunds")).json()["data"] == []
    response = await other.post("/v1/refunds", json={"payment_id": payment["id"]})
    assert response.status_code == 404
    assert (await _payment(api, payment["id"]))["amount_refunded"] == 100
