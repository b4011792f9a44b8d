"""No card number or CVC is ever stored, logged or echoed: only brand, last4, expiry and token."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from recur.payments.tables import metadata as payments_metadata
from recur.schema import all_tables

NUMBERS = {
    "saved": "4242424242424242",
    "saved_spaced": "4000 0566 5566 5556",
    "declines_on_charge": "4000000000000341",
    "declined_at_attach": "4000000000000002",
    "one_off": "5555555555554444",
    "one_off_declined": "4000000000009995",
    "luhn_failure": "4242424242424241",
}
CVC = "7319"


def card(number: str) -> dict:
    return {"number": number, "exp_month": 11, "exp_year": 2039, "cvc": CVC}


def _forms(number: str) -> list[str]:
    digits = number.replace(" ", "")
    return [number, digits, digits[:12]]  # even the first 12 digits: more than last4 + BIN


async def _dump(runtime, tables: list[sa.Table]) -> str:
    parts = []
    async with runtime.uow() as uow:
        for table in tables:
            for row in await uow.fetch_all(sa.select(table)):
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    parts.append(f"{table.name}.{value!r}")
    return "\n".join(parts)


async def test_card_numbers_are_never_stored_logged_or_echoed(
    api, runtime, make_customer, caplog
) -> None:
    # Every logger, SQL statements with their parameters too (SQLAlchemy's own logger is set to
    # WARN at import, so it is raised explicitly).
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    responses = []
    customer = await make_customer()
    cid = customer["id"]
    url = f"/v1/customers/{cid}/payment-methods"

    async def post(path: str, **kwargs) -> dict:
        response = await api.post(path, **kwargs)
        responses.append(response)
        assert response.status_code in (200, 402), response.text
        return response.json()

    saved = await post(url, json={"card": card(NUMBERS["saved"])})
    await post(
        url, json={"card": card(NUMBERS["saved_spaced"])}, headers={"Idempotency-Key": "attach-1"}
    )
    declining = await post(url, json={"card": card(NUMBERS["declines_on_charge"])})
    assert (await post(url, json={"card": card(NUMBERS["declined_at_attach"])}))["error"]
    assert (await post(url, json={"card": card(NUMBERS["luhn_failure"])}))["error"]

    paid = await post(
        "/v1/payments",
        json={"customer_id": cid, "amount": 1500},
        headers={"Idempotency-Key": "pay-1"},
    )
    assert paid["status"] == "succeeded"
    await post(
        "/v1/payments",
        json={"customer_id": cid, "amount": 800, "payment_method_id": declining["id"]},
    )
    one_off = await post(
        "/v1/payments", json={"customer_id": cid, "amount": 900, "card": card(NUMBERS["one_off"])}
    )
    assert one_off["payment_method_id"] is None
    await post(
        "/v1/payments",
        json={"customer_id": cid, "amount": 900, "card": card(NUMBERS["one_off_declined"])},
    )
    await post("/v1/refunds", json={"payment_id": paid["id"], "amount": 500})
    await post("/payment", params={"customer_id": customer["number"], "amount": "3.00"})
    for path in (
        url,
        f"{url}/{saved['id']}",
        "/v1/payments",
        "/v1/refunds",
        f"/v1/customers/{cid}/billing-history",
    ):
        responses.append(await api.get(path))

    payments_tables = list(payments_metadata.sorted_tables)
    assert {t.name for t in payments_tables} >= {
        "payment_methods",
        "payments",
        "refunds",
        "payments_outbox",
        "payments_inbox",
    }
    stored = await _dump(runtime, payments_tables)
    everything = await _dump(runtime, all_tables())  # other services' tables and the gateway's
    # The dump is real: what may be kept is there.
    assert "tok_sandbox_" in stored
    assert "'4242'" in stored and "'5556'" in stored
    assert "payment.succeeded" in stored and "refund.created" in stored

    logged = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    assert any(r.name == "recur.payments" for r in caplog.records)
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)
    assert "tok_sandbox_" in logged  # the parameters of the SQL are in what is checked

    for name, number in NUMBERS.items():
        for form in _forms(number):
            assert form not in stored, f"{name} stored in a payments table"
            assert form not in everything, f"{name} stored in some table"
            assert form not in logged, f"{name} logged"
            for response in responses:
                assert form not in response.text, f"{name} echoed by {response.request.url}"
    for text in (stored, everything):
        assert "cvc" not in text.lower()
        assert f"'{CVC}'" not in text and f'"{CVC}"' not in text
    assert f'"{CVC}"' not in logged and f"'{CVC}'" not in logged


async def test_payment_method_table_has_no_place_for_a_number() -> None:
    columns = {c.name for c in payments_metadata.tables["payments.payment_methods"].columns}
    assert columns == {
        "id",
        "tenant_id",
        "customer_id",
        "gateway",
        "gateway_token",
        "brand",
        "last4",
        "exp_month",
        "exp_year",
        "created",
        "detached_at",
    }
