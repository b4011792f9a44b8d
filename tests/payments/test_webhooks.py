"""Gateway webhooks through the API: verified by the gateway's signature with the tenant's own
secret, stored once by event id, applied once."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from recur.payments.gateways import build_gateway
from recur.payments.schemas import CardIn
from recur.payments.tables import gateway_events, outbox, payment_attempts
from recur.payments.tables import ledger as payments_ledger

SECRET = "whsec_recur_tenant_secret"
OTHER_SECRET = "whsec_another_tenants_secret"
HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


async def _stripe_charge(runtime, fake, key: str, amount: int = 1000) -> dict:
    """A PaymentIntent made at the fake with our key, as the charge path makes one; its
    `payment_intent.succeeded` event."""
    adapter = build_gateway("stripe", {"api_key": fake.api_key}, clock=runtime.clock)
    try:
        card = await adapter.tokenize(
            CardIn(number="4242424242424242", exp_month=12, exp_year=2040)
        )
        await adapter.charge(card.token, amount, "USD", key)
    finally:
        await adapter.aclose()
    return fake.last_event("payment_intent.succeeded")


async def _rows(runtime, table, *where) -> list:
    async with runtime.uow() as uow:
        return list(await uow.fetch_all(sa.select(table).where(*where)))


async def test_a_stripe_webhook_settles_a_pending_payment_once(
    api, tenant, runtime, make_customer, stripe_server, gateway_payments
) -> None:
    await gateway_payments.configure(
        api, "stripe", api_key=stripe_server.api_key, webhook_secret=SECRET
    )
    customer = await make_customer()
    key = "attempt-key-of-a-stripe-charge"
    payment_id = await gateway_payments.pending(
        tenant.id, customer["id"], "stripe", attempt_key=key
    )
    event = await _stripe_charge(runtime, stripe_server, key)
    headers, body = stripe_server.signed(event, SECRET)

    async with gateway_payments.anonymous() as gateway:
        first = await gateway.post("/v1/gateways/stripe/webhooks", content=body, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json() == {"received": True, "duplicate": False}
        again = await gateway.post("/v1/gateways/stripe/webhooks", content=body, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json() == {"received": True, "duplicate": True}

    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert (payment["status"], payment["gateway"]) == ("succeeded", "stripe")
    assert payment["gateway_reference"] == event["data"]["object"]["id"]
    succeeded = await _rows(runtime, outbox, outbox.c.type == "payment.succeeded")
    assert [row.payload["id"] for row in succeeded] == [payment_id]
    lines = await _rows(runtime, payments_ledger, payments_ledger.c.source_id == payment_id)
    assert sorted((line.account, line.debit, line.credit) for line in lines) == [
        ("gateway_cash:stripe", 1000, 0),
        ("payments_clearing", 0, 1000),
    ]
    stored = await _rows(runtime, gateway_events)
    assert [(e.gateway, e.event_id, e.outcome, e.payment_id) for e in stored] == [
        ("stripe", event["id"], "settled", payment_id)
    ]
    attempt = (await _rows(runtime, payment_attempts, payment_attempts.c.payment_id == payment_id))[
        0
    ]
    assert attempt.outcome == "succeeded"


async def test_an_adyen_webhook_settles_a_pending_payment_once(
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
    # Charged with the payment id as key: Adyen echoes it as the merchantReference.
    payment_id = await gateway_payments.pending(tenant.id, customer["id"], "adyen", 2500)
    item = adyen_server.notification(
        "AUTHORISATION", "PSP0000000001", merchant_reference=payment_id, amount=2500, currency="USD"
    )
    headers, body = adyen_server.signed(item, HMAC_KEY)

    async with gateway_payments.anonymous() as gateway:
        for _ in range(2):
            response = await gateway.post(
                "/v1/gateways/adyen/webhooks", content=body, headers=headers
            )
            assert response.status_code == 200, response.text
            assert response.text == "[accepted]"

    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert (payment["status"], payment["gateway_reference"]) == ("succeeded", "PSP0000000001")
    assert len(await _rows(runtime, outbox, outbox.c.type == "payment.succeeded")) == 1
    assert (
        len(await _rows(runtime, payments_ledger, payments_ledger.c.source_id == payment_id)) == 2
    )
    assert len(await _rows(runtime, gateway_events)) == 1


async def test_an_adyen_refusal_fails_the_payment(
    api, tenant, make_customer, adyen_server, gateway_payments
) -> None:
    await gateway_payments.configure(
        api,
        "adyen",
        api_key=adyen_server.api_key,
        merchant_account=adyen_server.merchant_account,
        hmac_key=HMAC_KEY,
    )
    customer = await make_customer()
    payment_id = await gateway_payments.pending(tenant.id, customer["id"], "adyen", 700)
    item = adyen_server.notification(
        "AUTHORISATION",
        "PSP0000000002",
        success=False,
        merchant_reference=payment_id,
        amount=700,
        currency="USD",
        reason="Refused",
    )
    headers, body = adyen_server.signed(item, HMAC_KEY)
    async with gateway_payments.anonymous() as gateway:
        response = await gateway.post("/v1/gateways/adyen/webhooks", content=body, headers=headers)
    assert response.status_code == 200, response.text
    payment = (await api.get(f"/v1/payments/{payment_id}")).json()
    assert (payment["status"], payment["failure_code"]) == ("failed", "card_declined")


@pytest.mark.parametrize("tamper", ["wrong_secret", "changed_body", "no_signature"])
async def test_a_bad_signature_is_a_400_and_stores_nothing(
    api, tenant, runtime, make_customer, stripe_server, gateway_payments, tamper
) -> None:
    await gateway_payments.configure(
        api, "stripe", api_key=stripe_server.api_key, webhook_secret=SECRET
    )
    customer = await make_customer()
    payment_id = await gateway_payments.pending(
        tenant.id, customer["id"], "stripe", attempt_key="k-1"
    )
    event = await _stripe_charge(runtime, stripe_server, "k-1")
    headers, body = stripe_server.signed(
        event, "whsec_not_the_tenants" if tamper == "wrong_secret" else SECRET
    )
    if tamper == "changed_body":
        body = body.replace(b'"amount":1000', b'"amount":1')
    if tamper == "no_signature":
        headers.pop("Stripe-Signature")

    async with gateway_payments.anonymous() as gateway:
        response = await gateway.post("/v1/gateways/stripe/webhooks", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "webhook_unverified"
    assert (await api.get(f"/v1/payments/{payment_id}")).json()["status"] == "pending"
    assert await _rows(runtime, gateway_events) == []
    assert await _rows(runtime, outbox, outbox.c.type == "payment.succeeded") == []


async def test_another_tenants_secret_cannot_settle_this_tenants_payment(
    api, tenant, other_tenant, runtime, make_customer, stripe_server, gateway_payments
) -> None:
    await gateway_payments.configure(
        api, "stripe", api_key=stripe_server.api_key, webhook_secret=SECRET
    )
    await gateway_payments.configure(
        other_tenant.client, "stripe", api_key=stripe_server.api_key, webhook_secret=OTHER_SECRET
    )
    customer = await make_customer()
    payment_id = await gateway_payments.pending(
        tenant.id, customer["id"], "stripe", attempt_key="k-2"
    )
    event = await _stripe_charge(runtime, stripe_server, "k-2")
    # Signed with the other tenant's secret, as that tenant could.
    headers, body = stripe_server.signed(event, OTHER_SECRET)
    async with gateway_payments.anonymous() as gateway:
        response = await gateway.post("/v1/gateways/stripe/webhooks", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert (await api.get(f"/v1/payments/{payment_id}")).json()["status"] == "pending"
    assert await _rows(runtime, gateway_events) == []


async def test_webhooks_need_no_api_key_but_everything_else_does(gateway_payments) -> None:
    async with gateway_payments.anonymous() as anonymous:
        unknown = await anonymous.post("/v1/gateways/stripe/webhooks", content=b"{}")
        assert unknown.status_code == 400, unknown.text
        assert unknown.json()["error"]["code"] == "webhook_unverified"
        assert (await anonymous.get("/v1/gateways")).status_code == 401
        assert (
            await anonymous.post("/v1/gateways/stripe/webhooks/x", content=b"{}")
        ).status_code == 401
        manual = await anonymous.post("/v1/gateways/manual/webhooks", content=b"{}")
        assert manual.status_code == 404, manual.text


async def test_webhooks_reach_the_payments_service_through_the_gateway_process(
    runtime, settings
) -> None:
    import httpx

    from recur.gateway.middleware import GATEWAY_WEBHOOK
    from recur.gateway.proxy import RouteTable
    from recur.gateway_app import route_templates
    from recur.service_app import create_service_app

    # `recur gateway` forwards the path to the payments service, without an API key.
    route = RouteTable(route_templates()).match("/v1/gateways/adyen/webhooks")
    assert route is not None and route.service == "payments"
    assert GATEWAY_WEBHOOK.match("/v1/gateways/adyen/webhooks")
    assert not GATEWAY_WEBHOOK.match("/v1/gateways/gw_123")
    # `recur serve --service payments` takes it without a key, and verifies it itself.
    app = create_service_app(runtime, "payments")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://payments.test") as client:
        response = await client.post("/v1/gateways/adyen/webhooks", content=b"{}")
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "webhook_unverified"
        assert (await client.get("/v1/gateways")).status_code == 401
