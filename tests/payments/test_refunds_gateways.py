"""Refunds through the gateway that took the payment, with the tenant's credentials for it:
partial ones at Stripe, Adyen's settled later by its webhook, and unknown outcomes kept
pending."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from recur.payments.reconcile import reconcile
from recur.payments.tables import ledger as payments_ledger
from recur.verify import verify

SECRET = "whsec_recur_tenant_secret"
HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


async def _stripe_payment(api, tenant, runtime, stripe_server, gateway_payments, make_customer):
    """A 1000 USD payment Stripe took (a PaymentIntent at the fake)."""
    from recur.payments.gateways import build_gateway
    from recur.payments.schemas import CardIn

    await gateway_payments.configure(
        api, "stripe", api_key=stripe_server.api_key, webhook_secret=SECRET
    )
    customer = await make_customer()
    adapter = build_gateway("stripe", {"api_key": stripe_server.api_key}, clock=runtime.clock)
    try:
        card = await adapter.tokenize(
            CardIn(number="4242424242424242", exp_month=12, exp_year=2040)
        )
        charged = await adapter.charge(card.token, 1000, "USD", "charge-key-1")
    finally:
        await adapter.aclose()
    assert charged.reference is not None
    return await gateway_payments.succeeded(tenant.id, customer["id"], "stripe", charged.reference)


async def _refund(api, payment_id: str, amount: int) -> dict:
    response = await api.post("/v1/refunds", json={"payment_id": payment_id, "amount": amount})
    assert response.status_code == 200, response.text
    return response.json()


async def _clean(runtime) -> None:
    assert [f.check for f in await verify(runtime.db) if not f.ok] == []


async def test_partial_refunds_twice_through_stripe(
    api, tenant, runtime, make_customer, stripe_server, gateway_payments
) -> None:
    payment_id = await _stripe_payment(
        api, tenant, runtime, stripe_server, gateway_payments, make_customer
    )
    first = await _refund(api, payment_id, 300)
    second = await _refund(api, payment_id, 200)
    assert (first["status"], second["status"]) == ("succeeded", "succeeded")

    made = list(stripe_server.refunds.values())
    assert sorted(r["amount"] for r in made) == [200, 300]
    assert {r["metadata"]["recur_idempotency_key"] for r in made} == {first["id"], second["id"]}
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert (payment["amount_refunded"], payment["refunded"]) == (500, False)

    too_much = await api.post("/v1/refunds", json={"payment_id": payment_id, "amount": 501})
    assert too_much.status_code == 400, too_much.text
    assert len(stripe_server.refunds) == 2
    async with runtime.uow() as uow:
        cash = await uow.fetch_one(
            sa.select(sa.func.sum(payments_ledger.c.debit - payments_ledger.c.credit)).where(
                payments_ledger.c.account == "gateway_cash:stripe"
            )
        )
    assert cash[0] == 500
    await _clean(runtime)


async def test_a_refund_whose_outcome_is_unknown_stays_pending(
    api, tenant, runtime, make_customer, stripe_server, gateway_payments
) -> None:
    payment_id = await _stripe_payment(
        api, tenant, runtime, stripe_server, gateway_payments, make_customer
    )
    stripe_server.faults.fail_next(500)  # maybe done: Stripe's 5xx
    refund = await _refund(api, payment_id, 400)
    assert refund["status"] == "pending"
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert payment["amount_refunded"] == 400  # set aside until it is known
    # Nothing more than what is left can be refunded meanwhile.
    too_much = await api.post("/v1/refunds", json={"payment_id": payment_id, "amount": 601})
    assert too_much.status_code == 400
    async with runtime.uow() as uow:
        lines = await uow.fetch_all(
            sa.select(payments_ledger).where(payments_ledger.c.source_id == refund["id"])
        )
    assert lines == []
    await _clean(runtime)

    # The reconciler asks Stripe by the refund's key: none was made (the 500 came before).
    # Too young to be sure it never arrived: left pending; once older, failed and given back.
    assert (await reconcile(runtime, unknown_after=timedelta(0))).refunds_failed == 0
    assert (await api.get(f"/v1/refunds/{refund['id']}")).json()["status"] == "pending"
    result = await reconcile(runtime, unknown_after=timedelta(0), stranded_after=timedelta(0))
    assert (result.refunds_asked, result.refunds_failed) == (1, 1)
    failed = (await api.get(f"/v1/refunds/{refund['id']}")).json()
    assert (failed["status"], failed["failure_code"]) == ("failed", "not_found")
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert payment["amount_refunded"] == 0
    assert (await _refund(api, payment_id, 1000))["status"] == "succeeded"
    await _clean(runtime)


async def test_a_refund_made_but_unanswered_is_settled_by_the_reconciler(
    api, runtime, make_customer, attach
) -> None:
    customer = await make_customer()
    assert (await attach(customer["id"])).status_code == 200
    body = {"customer_id": customer["id"], "amount": 1000, "currency": "USD"}
    payment = (await api.post("/v1/payments", json=body)).json()
    assert payment["status"] == "succeeded"
    # The sandbox now makes every refund and loses its answer.
    faults = {"timeout_share": 1.0, "charged_on_timeout_share": 1.0, "operations": ["refund"]}
    configured = await api.post(
        "/v1/gateways", json={"name": "sandbox", "credentials": {"faults": faults}}
    )
    assert configured.status_code == 200, configured.text
    refund = await _refund(api, payment["id"], 250)
    assert refund["status"] == "pending"

    result = await reconcile(runtime, unknown_after=timedelta(0))
    assert (result.refunds_asked, result.refunds_succeeded) == (1, 1)
    settled = (await api.get(f"/v1/refunds/{refund['id']}")).json()
    assert settled["status"] == "succeeded" and settled["gateway_reference"]
    assert (await api.get(f"/v1/payments/{payment['id']}")).json()["amount_refunded"] == 250
    # Settled once: another pass finds nothing to ask.
    assert (await reconcile(runtime, unknown_after=timedelta(0))).refunds_asked == 0
    await _clean(runtime)


async def test_an_adyen_refund_is_settled_by_its_webhook(
    api, tenant, runtime, make_customer, adyen_server, gateway_payments
) -> None:
    await gateway_payments.configure(
        api,
        "adyen",
        api_key=adyen_server.api_key,
        merchant_account=adyen_server.merchant_account,
        hmac_key=HMAC_KEY,
    )
    customer = await make_customer()
    # A payment Adyen authorised, known to the fake by its pspReference.
    adyen_server.payments["PSP_PAID_1"] = {
        "pspReference": "PSP_PAID_1",
        "reference": "charge-key",
        "result": "Authorised",
        "amount": 1000,
        "refunded": 0,
    }
    payment_id = await gateway_payments.succeeded(tenant.id, customer["id"], "adyen", "PSP_PAID_1")

    refund = await _refund(api, payment_id, 600)
    assert refund["status"] == "pending"  # Adyen only says it received it
    failing = await _refund(api, payment_id, 100)
    assert failing["status"] == "pending"

    succeeded_item, _ = [n for n in adyen_server.notifications if n["eventCode"] == "REFUND"]
    assert succeeded_item["merchantReference"] == refund["id"]
    refused = adyen_server.notification(
        "REFUND_FAILED",
        "PSP_REFUND_REFUSED",
        original_reference="PSP_PAID_1",
        merchant_reference=failing["id"],
        amount=100,
        currency="USD",
    )
    async with gateway_payments.anonymous() as gateway:
        for item in (succeeded_item, refused, succeeded_item):
            headers, body = adyen_server.signed(item, HMAC_KEY)
            response = await gateway.post(
                "/v1/gateways/adyen/webhooks", content=body, headers=headers
            )
            assert (response.status_code, response.text) == (200, "[accepted]")

    assert (await api.get(f"/v1/refunds/{refund['id']}")).json()["status"] == "succeeded"
    assert (await api.get(f"/v1/refunds/{failing['id']}")).json()["status"] == "failed"
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert payment["amount_refunded"] == 600
    async with runtime.uow() as uow:
        lines = await uow.fetch_all(
            sa.select(payments_ledger).where(payments_ledger.c.kind == "refund")
        )
    assert sorted((line.account, line.debit, line.credit) for line in lines) == [
        ("gateway_cash:adyen", 0, 600),
        ("refunds", 600, 0),
    ]
    await _clean(runtime)


async def test_a_refund_needs_the_gateway_that_took_the_payment(
    api, tenant, make_customer, gateway_payments
) -> None:
    customer = await make_customer()
    # Taken by Stripe, which the tenant no longer has configured.
    payment_id = await gateway_payments.succeeded(tenant.id, customer["id"], "stripe", "pi_gone")
    response = await api.post("/v1/refunds", json={"payment_id": payment_id, "amount": 100})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "gateway_unavailable"
    listed = (await api.get("/v1/refunds", params={"payment_id": payment_id})).json()["data"]
    assert listed == []
    assert (await api.get(f"/v1/payments/{payment_id}")).json()["amount_refunded"] == 0
