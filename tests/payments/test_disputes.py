"""Disputes from the gateways' webhooks: the payment is marked, the ledger moves the disputed
money (held, given back, or written off), and `recur verify` stays clean."""

from __future__ import annotations

import sqlalchemy as sa

from recur.payments.gateways import build_gateway
from recur.payments.schemas import CardIn
from recur.payments.tables import ledger as payments_ledger
from recur.payments.tables import outbox
from recur.verify import verify

SECRET = "whsec_recur_tenant_secret"
HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


async def _balances(runtime, payment_id: str) -> dict[str, int]:
    async with runtime.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(
                payments_ledger.c.account,
                sa.func.sum(payments_ledger.c.debit - payments_ledger.c.credit),
            )
            .where(payments_ledger.c.source_id == payment_id)
            .group_by(payments_ledger.c.account)
        )
    return {account: int(total) for account, total in rows if total}


async def _clean(runtime) -> None:
    findings = await verify(runtime.db)
    assert [(f.check, f.offenders) for f in findings if not f.ok] == []


async def _post(gateway_payments, name: str, headers, body) -> None:
    async with gateway_payments.anonymous() as gateway:
        response = await gateway.post(
            f"/v1/gateways/{name}/webhooks", content=body, headers=headers
        )
    assert response.status_code == 200, response.text


async def test_a_stripe_dispute_opened_then_lost(
    api, tenant, runtime, make_customer, stripe_server, gateway_payments
) -> None:
    await gateway_payments.configure(
        api, "stripe", api_key=stripe_server.api_key, webhook_secret=SECRET
    )
    customer = await make_customer()
    adapter = build_gateway("stripe", {"api_key": stripe_server.api_key}, clock=runtime.clock)
    try:
        card = await adapter.tokenize(
            CardIn(number="4242424242424242", exp_month=12, exp_year=2040)
        )
        charged = await adapter.charge(card.token, 1000, "USD", "dispute-charge")
    finally:
        await adapter.aclose()
    assert charged.reference is not None
    payment_id = await gateway_payments.succeeded(
        tenant.id, customer["id"], "stripe", charged.reference
    )

    dispute_id = stripe_server.open_dispute(charged.reference)
    opened = stripe_server.signed(stripe_server.last_event("charge.dispute.created"), SECRET)
    await _post(gateway_payments, "stripe", *opened)
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert (payment["dispute_status"], payment["amount_disputed"]) == ("open", 1000)
    assert await _balances(runtime, payment_id) == {
        "disputes": 1000,
        "payments_clearing": -1000,
    }
    await _clean(runtime)
    # A disputed payment cannot be refunded: the gateway holds the money.
    refused = await api.post("/v1/refunds", json={"payment_id": payment_id})
    assert refused.status_code == 409, refused.text

    stripe_server.close_dispute(dispute_id, "lost")
    lost = stripe_server.signed(stripe_server.last_event("charge.dispute.closed"), SECRET)
    await _post(gateway_payments, "stripe", *lost)
    # Both delivered again: nothing moves twice.
    await _post(gateway_payments, "stripe", *opened)
    await _post(gateway_payments, "stripe", *lost)

    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert (payment["dispute_status"], payment["amount_disputed"]) == ("lost", 1000)
    assert await _balances(runtime, payment_id) == {
        "dispute_losses": 1000,
        "payments_clearing": -1000,
    }
    async with runtime.uow() as uow:
        events = await uow.fetch_all(
            sa.select(outbox.c.type).where(outbox.c.type.startswith("payment.dispute"))
        )
    assert sorted(e.type for e in events) == ["payment.dispute_closed", "payment.dispute_opened"]
    await _clean(runtime)


async def test_an_adyen_chargeback_reversed_is_won(
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
    payment_id = await gateway_payments.succeeded(tenant.id, customer["id"], "adyen", "PSP_CB_1")
    for code, psp in (
        ("NOTIFICATION_OF_CHARGEBACK", "PSP_CB_N"),
        ("CHARGEBACK", "PSP_CB_C"),
    ):
        item = adyen_server.notification(
            code,
            psp,
            original_reference="PSP_CB_1",
            merchant_reference=payment_id,
            amount=400,
            currency="USD",
        )
        await _post(gateway_payments, "adyen", *adyen_server.signed(item, HMAC_KEY))
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert (payment["dispute_status"], payment["amount_disputed"]) == ("open", 400)
    assert await _balances(runtime, payment_id) == {
        "gateway_cash:adyen": 600,
        "disputes": 400,
        "payments_clearing": -1000,
    }
    await _clean(runtime)

    item = adyen_server.notification(
        "CHARGEBACK_REVERSED",
        "PSP_CB_R",
        original_reference="PSP_CB_1",
        merchant_reference=payment_id,
        amount=400,
        currency="USD",
    )
    await _post(gateway_payments, "adyen", *adyen_server.signed(item, HMAC_KEY))
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert payment["dispute_status"] == "won"
    assert await _balances(runtime, payment_id) == {
        "gateway_cash:adyen": 1000,
        "payments_clearing": -1000,
    }
    await _clean(runtime)


async def test_verify_finds_a_dispute_the_ledger_does_not_show(
    api, tenant, runtime, make_customer, gateway_payments
) -> None:
    from recur.payments.tables import payments

    customer = await make_customer()
    payment_id = await gateway_payments.succeeded(tenant.id, customer["id"], "sandbox", "ch_x")
    async with runtime.uow() as uow:
        await uow.execute(
            sa.update(payments)
            .where(payments.c.id == payment_id)
            .values(dispute_status="open", amount_disputed=300)
        )
        await uow.commit()
    failing = {f.check: f.offenders for f in await verify(runtime.db) if not f.ok}
    assert failing["every dispute's ledger equals what it holds or lost"] == [payment_id]
    assert "gateway cash equals payments less refunds" in failing
