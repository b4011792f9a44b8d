"""Manual payments (bank transfer, cash), marked paid or failed by an operator."""

from __future__ import annotations

import sqlalchemy as sa

from recur.payments.operator_marks import marks_reader
from recur.payments.tables import ledger as payments_ledger
from recur.payments.tables import outbox
from recur.verify import verify

from ..subscriptions.conftest import BillingDriver


async def test_an_operator_marks_a_manual_payment_paid(
    api, tenant, runtime, make_customer, gateway_payments
) -> None:
    customer = await make_customer()
    payment_id = await gateway_payments.pending(
        tenant.id, customer["id"], "manual", 5000, attempt_key="manual-attempt-1"
    )
    read = marks_reader(runtime)
    assert await read("manual-attempt-1") is None

    response = await api.post(
        f"/v1/payments/{payment_id}/mark-paid",
        json={"reference": "BANK-REF-991", "note": "seen on the statement"},
    )
    assert response.status_code == 200, response.text
    payment = response.json()
    assert (payment["status"], payment["gateway_reference"]) == ("succeeded", "BANK-REF-991")
    assert (await api.get(f"/v1/payments/{payment_id}")).json() == payment

    mark = await read("manual-attempt-1")
    assert mark is not None and mark.paid and mark.reference == "BANK-REF-991"
    async with runtime.uow() as uow:
        lines = await uow.fetch_all(
            sa.select(payments_ledger).where(payments_ledger.c.source_id == payment_id)
        )
        events = await uow.fetch_all(
            sa.select(outbox.c.type).where(outbox.c.type.like("payment.%"))
        )
    assert sorted((line.account, line.debit, line.credit) for line in lines) == [
        ("gateway_cash:manual", 5000, 0),
        ("payments_clearing", 0, 5000),
    ]
    assert [e.type for e in events] == ["payment.succeeded"]

    # Only while pending: marked again, either way, it is a 409 and nothing moves.
    for action in ("mark-paid", "mark-failed"):
        again = await api.post(f"/v1/payments/{payment_id}/{action}")
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "payment_not_pending"
    assert [f.check for f in await verify(runtime.db) if not f.ok] == []


async def test_an_operator_marks_a_manual_payment_failed(
    api, tenant, make_customer, gateway_payments
) -> None:
    customer = await make_customer()
    payment_id = await gateway_payments.pending(tenant.id, customer["id"], "manual", 800)
    response = await api.post(f"/v1/payments/{payment_id}/mark-failed")
    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["failure_code"]) == (
        "failed",
        "not_received",
    )


async def test_only_manual_payments_of_the_tenant_are_marked(
    api, tenant, other_tenant, make_customer, gateway_payments
) -> None:
    customer = await make_customer()
    card_payment = await gateway_payments.pending(tenant.id, customer["id"], "sandbox", 800)
    refused = await api.post(f"/v1/payments/{card_payment}/mark-paid")
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["code"] == "not_a_manual_payment"
    assert (await api.get(f"/v1/payments/{card_payment}")).json()["status"] == "pending"

    manual = await gateway_payments.pending(tenant.id, customer["id"], "manual", 800)
    other = await other_tenant.client.post(f"/v1/payments/{manual}/mark-paid")
    assert other.status_code == 404, other.text
    bad = await api.post(f"/v1/payments/{manual}/mark-paid", json={"note": "x" * 501})
    assert bad.status_code == 400, bad.text
    assert (await api.get(f"/v1/payments/{manual}")).json()["status"] == "pending"


async def test_a_bank_transfer_through_the_api_waits_for_the_operator(
    api, runtime, make_customer
) -> None:
    from datetime import timedelta

    from recur.payments.reconcile import reconcile

    customer = await make_customer()
    attached = await api.post(
        f"/v1/customers/{customer['id']}/payment-methods", json={"type": "bank_transfer"}
    )
    assert attached.status_code == 200, attached.text
    method = attached.json()
    assert (method["type"], method["gateway"], method["card"]) == ("bank_transfer", "manual", None)
    # The first payment method is the customer's default: its charges wait for a transfer.
    body = {"customer_id": customer["id"], "amount": 2500, "currency": "USD"}
    created = await api.post("/v1/payments", json=body)
    assert created.status_code == 200, created.text
    payment = created.json()
    assert (payment["status"], payment["gateway"]) == ("pending", "manual")
    assert payment["routing_reason"] == "a bank_transfer payment: manual"
    [attempt] = (await api.get(f"/v1/payments/{payment['id']}")).json()["attempts"]
    assert (attempt["outcome"], attempt["failure_code"]) == ("unknown", "awaiting_operator")
    assert attempt["gateway_reference"].startswith("RCR-")
    # Nothing for the reconciler to ask: only the operator settles it.
    assert (await reconcile(runtime, unknown_after=timedelta(0))).asked == 0
    # Awaiting the operator is no fault of the gateway: its breaker never opens on it.
    more = [(await api.post("/v1/payments", json=body)).json() for _ in range(6)]
    assert {(p["status"], p["gateway"]) for p in more} == {("pending", "manual")}

    paid = await api.post(f"/v1/payments/{payment['id']}/mark-paid", json={"reference": "B-1"})
    assert paid.status_code == 200, paid.text
    assert (paid.json()["status"], paid.json()["gateway_reference"]) == ("succeeded", "B-1")
    assert [f.check for f in await verify(runtime.db) if not f.ok] == []


async def test_manual_payment_methods_refuse_bad_input_and_a_disabled_gateway(
    api, make_customer
) -> None:
    customer = await make_customer()
    path = f"/v1/customers/{customer['id']}/payment-methods"
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
    for body in ({"type": "cash", "card": card}, {"type": "card"}, {"type": "cheque"}):
        refused = await api.post(path, json=body)
        assert refused.status_code == 400, (body, refused.text)
    configured = await api.post("/v1/gateways", json={"name": "manual", "enabled": False})
    assert configured.status_code == 200, configured.text
    disabled = await api.post(path, json={"type": "cash"})
    assert disabled.status_code == 409, disabled.text
    assert disabled.json()["error"]["code"] == "gateway_unavailable"
    assert (await api.get(path)).json()["data"] == []


async def test_a_subscription_paid_by_bank_transfer_starts_once_the_operator_marks_it(
    api, runtime, make_customer, monkeypatch
) -> None:
    from recur.kit.clock import FrozenClock
    from recur.subscriptions.billing import LEASE
    from recur.subscriptions.billing import run as bill_run

    billing = BillingDriver(api)
    customer = await billing.customer(card=None)
    await billing.post(f"/v1/customers/{customer['id']}/payment-methods", {"type": "bank_transfer"})
    plan = await billing.plan(amount=1999)
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    assert sub["status"] == "incomplete"  # waiting for the transfer
    [order] = (await api.get("/v1/orders", params={"subscription_id": sub["id"]})).json()["data"]
    [payment] = (await api.get("/v1/payments", params={"order_id": order["id"]})).json()["data"]
    assert (payment["status"], payment["gateway"]) == ("pending", "manual")

    paid = await api.post(f"/v1/payments/{payment['id']}/mark-paid", json={"reference": "B-9"})
    assert paid.status_code == 200, paid.text
    assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "paid"
    # The bill run's next look at the period, once the lease of the request that charged it
    # is over, finds its order paid and starts the subscription.
    monkeypatch.setattr(runtime, "clock", FrozenClock(runtime.clock.now() + LEASE))
    await bill_run(runtime)
    started = (await api.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert (started["status"], started["latest_order_id"]) == ("active", order["id"])
