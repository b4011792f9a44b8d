"""The Adyen adapter (Checkout API v71 over aiohttp) against a local fake of Adyen."""

from __future__ import annotations

import base64
import socket
from typing import Any

import orjson
import pytest

from recur.kit.clock import FrozenClock
from recur.payments.gateways import build_gateway
from recur.payments.gateways.adyen_notifications import notification_signature
from recur.payments.gateways.base import (
    ChargeStatus,
    GatewayDecline,
    GatewayOutcomeUnknown,
    GatewayRetriableError,
    PaymentGateway,
    TokenizedCard,
    WebhookKind,
    WebhookSignatureError,
)
from recur.payments.schemas import CardIn

HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"  # the fixture's


def _card(number: str = "4242424242424242", exp_month: int = 12, exp_year: int = 2040) -> CardIn:
    return CardIn(number=number, exp_month=exp_month, exp_year=exp_year, cvc="737")


async def _token(adyen: PaymentGateway, number: str = "4242424242424242") -> TokenizedCard:
    return await adyen.tokenize(_card(number))


def _payments(adyen_fake: Any) -> list[dict[str, Any]]:
    return [r for r in adyen_fake.requests if r["path"] == "/v71/payments"]


async def test_tokenize_is_a_zero_value_check_that_stores_the_card(
    adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await adyen.tokenize(_card("5555 5555 5555 4444", exp_month=3))
    shopper, _, stored = card.token.partition("/")
    assert shopper.startswith("recur_") and stored
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == (
        "mastercard",
        "4444",
        3,
        2040,
    )
    assert (shopper, stored) in adyen_fake.stored
    [request] = _payments(adyen_fake)
    body = request["body"]
    assert body["amount"] == {"value": 0, "currency": "USD"}
    assert body["storePaymentMethod"] is True
    assert body["shopperInteraction"] == "Ecommerce"
    assert body["paymentMethod"] == {
        "type": "scheme",
        "number": "5555555555554444",
        "expiryMonth": "03",
        "expiryYear": "2040",
        "cvc": "737",
    }
    assert request["key"] == body["reference"]


@pytest.mark.parametrize(
    ("number", "exp_year", "code"),
    [
        ("4000000000000002", 2040, "card_declined"),
        ("4000000000009995", 2040, "insufficient_funds"),
        ("4242424242424241", 2040, "incorrect_number"),
        ("4242424242424242", 2029, "expired_card"),
    ],
)
async def test_tokenize_refusals_are_declines(
    adyen: PaymentGateway, number: str, exp_year: int, code: str
) -> None:
    with pytest.raises(GatewayDecline) as declined:
        await adyen.tokenize(_card(number, exp_year=exp_year))
    assert declined.value.code == code
    assert number not in declined.value.message


async def test_charge_is_a_contauth_payment_with_our_key_as_reference(
    adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await _token(adyen)
    result = await adyen.charge(card.token, 1999, "eur", idempotency_key="pay_A1")
    [payment] = adyen_fake.payments_with_reference("pay_A1")
    assert result.succeeded and result.reference is not None
    assert (payment["amount"], payment["currency"]) == (1999, "EUR")
    request = _payments(adyen_fake)[-1]
    shopper, _, stored = card.token.partition("/")
    assert request["key"] == "pay_A1"
    assert request["body"] == {
        "merchantAccount": adyen_fake.merchant_account,
        "amount": {"value": 1999, "currency": "EUR"},
        "reference": "pay_A1",
        "paymentMethod": {"type": "scheme", "storedPaymentMethodId": stored},
        "shopperReference": shopper,
        "shopperInteraction": "ContAuth",
        "recurringProcessingModel": "Subscription",
    }


async def test_a_refused_charge_is_a_failed_result(adyen: PaymentGateway) -> None:
    card = await _token(adyen, "4000000000000341")
    result = await adyen.charge(card.token, 500, "EUR", idempotency_key="pay_D1")
    assert (result.succeeded, result.failure_code, result.failure_message) == (
        False,
        "card_declined",
        "Refused",
    )
    assert result.reference is not None
    lookup = await adyen.lookup_charge("pay_D1", token=card.token, amount=500, currency="EUR")
    assert (lookup.status, lookup.reference) == (ChargeStatus.FAILED, result.reference)


async def test_the_same_key_never_makes_two_charges(adyen: PaymentGateway, adyen_fake: Any) -> None:
    card = await _token(adyen)
    first = await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_S1")
    again = await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_S1")
    assert first == again
    assert len(adyen_fake.payments_with_reference("pay_S1")) == 1
    assert adyen_fake.mismatches == 0


@pytest.mark.parametrize(("status", "code"), [(429, "rate_limited"), (401, "gateway_auth_failed")])
async def test_refusals_before_processing_are_retriable(
    adyen: PaymentGateway, adyen_fake: Any, status: int, code: str
) -> None:
    card = await _token(adyen)
    adyen_fake.faults.fail_next(status, {"status": status, "errorCode": "000", "message": "no"})
    with pytest.raises(GatewayRetriableError) as refused:
        await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_R1")
    assert refused.value.code == code
    assert adyen_fake.payments_with_reference("pay_R1") == []


async def test_a_wrong_api_key_is_retriable_and_never_shown(
    adyen_fake: Any, clock: FrozenClock
) -> None:
    gateway = build_gateway(
        "adyen",
        {"api_key": "AQE_not_the_key", "merchant_account": adyen_fake.merchant_account},
        clock=clock,
        base_url=adyen_fake.url,
    )
    try:
        with pytest.raises(GatewayRetriableError) as refused:
            await gateway.charge("s/x", 1000, "USD", idempotency_key="pay_R2")
        assert refused.value.code == "gateway_auth_failed"
        assert "AQE_not_the_key" not in str(refused.value)
    finally:
        await gateway.aclose()


async def test_a_refused_connection_is_retriable(clock: FrozenClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = build_gateway(
        "adyen",
        {"api_key": "AQE_some_key", "merchant_account": "M"},
        clock=clock,
        base_url=f"http://127.0.0.1:{port}",
    )
    try:
        with pytest.raises(GatewayRetriableError) as unreachable:
            await gateway.charge("s/x", 1000, "USD", idempotency_key="pay_C1")
        assert unreachable.value.code == "connection_failed"
    finally:
        await gateway.aclose()


async def test_result_code_error_is_retriable(adyen: PaymentGateway, adyen_fake: Any) -> None:
    card = await _token(adyen)
    adyen_fake.next_result = "Error"
    with pytest.raises(GatewayRetriableError):
        await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_E0")


async def test_a_5xx_is_an_unknown_outcome(adyen: PaymentGateway, adyen_fake: Any) -> None:
    card = await _token(adyen)
    adyen_fake.faults.fail_next(500, {"status": 500, "errorCode": "905", "message": "oops"})
    with pytest.raises(GatewayOutcomeUnknown) as unknown:
        await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_E1")
    assert unknown.value.code == "gateway_error"


async def test_timeout_after_the_charge_then_lookup_replays_it(
    adyen: PaymentGateway, impatient_adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await _token(adyen)
    adyen_fake.faults.stall_next(processed=True)
    with pytest.raises(GatewayOutcomeUnknown) as unknown:
        await impatient_adyen.charge(card.token, 1000, "USD", idempotency_key="pay_T1")
    assert unknown.value.code == "timeout"
    await adyen_fake.faults.wait_stalled()
    [payment_psp] = [p for p, v in adyen_fake.payments.items() if v["reference"] == "pay_T1"]
    lookup = await adyen.lookup_charge("pay_T1", token=card.token, amount=1000, currency="USD")
    assert (lookup.status, lookup.reference) == (ChargeStatus.SUCCEEDED, payment_psp)
    assert len(adyen_fake.payments_with_reference("pay_T1")) == 1
    assert adyen_fake.mismatches == 0


async def test_timeout_before_the_charge_then_lookup_makes_it_once(
    adyen: PaymentGateway, impatient_adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await _token(adyen)
    adyen_fake.faults.stall_next(processed=False)
    with pytest.raises(GatewayOutcomeUnknown):
        await impatient_adyen.charge(card.token, 1000, "USD", idempotency_key="pay_T2")
    await adyen_fake.faults.wait_stalled()
    assert adyen_fake.payments_with_reference("pay_T2") == []
    # Adyen has no lookup by reference: resending the same request under the same key is it.
    lookup = await adyen.lookup_charge("pay_T2", token=card.token, amount=1000, currency="USD")
    assert lookup.status == ChargeStatus.SUCCEEDED
    again = await adyen.lookup_charge("pay_T2", token=card.token, amount=1000, currency="USD")
    assert again == lookup
    assert len(adyen_fake.payments_with_reference("pay_T2")) == 1
    assert adyen_fake.mismatches == 0


async def test_pending_and_in_flight_are_unknown_outcomes(
    adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await _token(adyen)
    adyen_fake.next_result = "Received"
    with pytest.raises(GatewayOutcomeUnknown) as pending:
        await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_U1")
    assert pending.value.code == "pending"
    [psp] = [p for p, v in adyen_fake.payments.items() if v["reference"] == "pay_U1"]
    assert pending.value.reference == psp
    lookup = await adyen.lookup_charge("pay_U1", token=card.token, amount=1000, currency="USD")
    assert (lookup.status, lookup.reference) == (ChargeStatus.UNKNOWN, psp)

    adyen_fake.hold_in_flight("pay_U2")
    with pytest.raises(GatewayOutcomeUnknown) as in_flight:
        await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_U2")
    assert in_flight.value.code == "in_progress"
    lookup = await adyen.lookup_charge("pay_U2", token=card.token, amount=1000, currency="USD")
    assert lookup.status == ChargeStatus.UNKNOWN


async def test_partial_refunds_are_settled_by_their_webhooks(
    adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await _token(adyen)
    charge = await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_P1")
    assert charge.reference is not None
    references = []
    for refund_id, amount in (("re_1", 300), ("re_1", 300), ("re_2", 700), ("re_3", 1)):
        with pytest.raises(GatewayOutcomeUnknown) as received:
            await adyen.refund(charge.reference, amount, "USD", idempotency_key=refund_id)
        assert received.value.code == "pending" and received.value.reference
        references.append(received.value.reference)
    assert references[0] == references[1]  # the same key: the same refund
    assert len(adyen_fake.refunds) == 3

    outcomes = []
    for item in [n for n in adyen_fake.notifications if n["eventCode"] == "REFUND"]:
        event = adyen.parse_webhook(*adyen_fake.signed(item, HMAC_KEY))
        assert event.charge_reference == charge.reference
        outcomes.append((event.kind, event.idempotency_key, event.amount, event.refund_reference))
    assert outcomes == [
        (WebhookKind.REFUND_SUCCEEDED, "re_1", 300, references[0]),
        (WebhookKind.REFUND_SUCCEEDED, "re_2", 700, references[2]),
        (WebhookKind.REFUND_FAILED, "re_3", 1, references[3]),
    ]


async def test_a_refund_of_an_unknown_payment_is_refused(adyen: PaymentGateway) -> None:
    result = await adyen.refund("0000000000009999", 100, "USD", idempotency_key="re_X")
    assert (result.succeeded, result.failure_code) == (False, "refund_refused")


async def test_webhooks_of_charges_and_disputes(adyen: PaymentGateway, adyen_fake: Any) -> None:
    card = await _token(adyen)
    charge = await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_W1")
    [authorised] = [n for n in adyen_fake.notifications if n["merchantReference"] == "pay_W1"]
    event = adyen.parse_webhook(*adyen_fake.signed(authorised, HMAC_KEY))
    assert (event.gateway, event.kind, event.gateway_type) == (
        "adyen",
        WebhookKind.CHARGE_SUCCEEDED,
        "AUTHORISATION",
    )
    assert (event.charge_reference, event.idempotency_key, event.amount, event.currency) == (
        charge.reference,
        "pay_W1",
        1000,
        "USD",
    )
    assert event.event_id == f"{charge.reference}:AUTHORISATION:true"
    assert event.occurred_at == adyen_fake.clock.now()

    # The zero-value check of tokenize is no payment of ours.
    verification = adyen_fake.notification(
        "AUTHORISATION", "0000000000000042", merchant_reference="recur-verify-abc"
    )
    assert adyen.parse_webhook(*adyen_fake.signed(verification, HMAC_KEY)).kind == WebhookKind.OTHER

    chargeback = adyen_fake.notification(
        "CHARGEBACK",
        "9915555555555555",
        original_reference=charge.reference,
        merchant_reference="pay_W1",
        amount=1000,
        currency="USD",
        extra={"disputeStatus": "Undefended"},
    )
    opened = adyen.parse_webhook(*adyen_fake.signed(chargeback, HMAC_KEY))
    assert (opened.kind, opened.dispute_reference, opened.charge_reference) == (
        WebhookKind.DISPUTE_OPENED,
        "9915555555555555",
        charge.reference,
    )
    assert opened.idempotency_key == "pay_W1"
    reversed_ = adyen_fake.notification(
        "CHARGEBACK_REVERSED", "9915555555555555", original_reference=charge.reference
    )
    closed = adyen.parse_webhook(*adyen_fake.signed(reversed_, HMAC_KEY))
    assert (closed.kind, closed.dispute_outcome) == (WebhookKind.DISPUTE_CLOSED, "won")


async def test_a_refused_authorisation_webhook_is_a_failed_charge(
    adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await _token(adyen, "4000000000000341")
    await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_W2")
    [refused] = [n for n in adyen_fake.notifications if n["merchantReference"] == "pay_W2"]
    event = adyen.parse_webhook(*adyen_fake.signed(refused, HMAC_KEY))
    assert (event.kind, event.failure_message) == (WebhookKind.CHARGE_FAILED, "Refused")
    assert event.event_id.endswith(":AUTHORISATION:false")


async def test_webhooks_with_a_bad_signature_are_rejected(
    adyen: PaymentGateway, adyen_fake: Any
) -> None:
    item = adyen_fake.notification("AUTHORISATION", "8815555555555555", amount=1000)
    with pytest.raises(WebhookSignatureError) as wrong_key:
        adyen.parse_webhook(*adyen_fake.signed(item, "00" * 32))
    assert wrong_key.value.code == "bad_signature"

    headers, body = adyen_fake.signed(item, HMAC_KEY)
    with pytest.raises(WebhookSignatureError) as tampered:
        adyen.parse_webhook(headers, body.replace(b'"value":1000', b'"value":9000'))
    assert tampered.value.code == "bad_signature"
    with pytest.raises(WebhookSignatureError) as unsigned:
        adyen.parse_webhook(headers, body.replace(b"hmacSignature", b"somethingElse"))
    assert unsigned.value.code == "malformed_webhook"
    with pytest.raises(WebhookSignatureError):
        adyen.parse_webhook(headers, b"not json")
    assert adyen.parse_webhook(headers, body).kind == WebhookKind.CHARGE_SUCCEEDED


def test_the_signature_is_adyens_documented_one() -> None:
    """The signing string is the eight documented fields joined by colons, empty when absent."""
    import hashlib
    import hmac

    item = {
        "pspReference": "7914073381342284",
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "TestPayment-1407325143704",
        "amount": {"value": 1130, "currency": "EUR"},
        "eventCode": "AUTHORISATION",
        "success": "true",
    }
    signing = "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
    expected = hmac.new(bytes.fromhex(HMAC_KEY), signing.encode(), hashlib.sha256).digest()
    assert notification_signature(item, HMAC_KEY) == base64.b64encode(expected).decode()


async def test_webhook_basic_auth_when_the_tenant_set_one(
    adyen_fake: Any, clock: FrozenClock
) -> None:
    gateway = build_gateway(
        "adyen",
        {
            "api_key": adyen_fake.api_key,
            "merchant_account": adyen_fake.merchant_account,
            "hmac_key": HMAC_KEY,
            "webhook_username": "adyen",
            "webhook_password": "s3cret",
        },
        clock=clock,
    )
    item = adyen_fake.notification("AUTHORISATION", "8815555555555556", amount=1)
    good = "Basic " + base64.b64encode(b"adyen:s3cret").decode()
    assert gateway.parse_webhook(*adyen_fake.signed(item, HMAC_KEY, {"Authorization": good}))
    bad = "Basic " + base64.b64encode(b"adyen:guess").decode()
    for headers in ({"Authorization": bad}, {}):
        with pytest.raises(WebhookSignatureError) as refused:
            gateway.parse_webhook(*adyen_fake.signed(item, HMAC_KEY, headers))
        assert refused.value.code == "bad_credentials"
    await gateway.aclose()


async def test_webhooks_need_the_tenants_hmac_key(adyen_fake: Any, clock: FrozenClock) -> None:
    gateway = build_gateway(
        "adyen",
        {"api_key": adyen_fake.api_key, "merchant_account": adyen_fake.merchant_account},
        clock=clock,
    )
    item = adyen_fake.notification("AUTHORISATION", "8815555555555557")
    with pytest.raises(WebhookSignatureError) as missing:
        gateway.parse_webhook(*adyen_fake.signed(item, HMAC_KEY))
    assert missing.value.code == "no_webhook_secret"
    await gateway.aclose()


async def test_a_refund_that_never_arrived_is_made_once_by_its_lookup(
    adyen: PaymentGateway, impatient_adyen: PaymentGateway, adyen_fake: Any
) -> None:
    card = await _token(adyen)
    charge = await adyen.charge(card.token, 1000, "USD", idempotency_key="pay_R1")
    assert charge.reference is not None
    adyen_fake.faults.stall_next(processed=False)
    with pytest.raises(GatewayOutcomeUnknown):
        await impatient_adyen.refund(charge.reference, 300, "USD", idempotency_key="re_R1")
    await adyen_fake.faults.wait_stalled()
    assert adyen_fake.refunds == {}
    # No way to read a refund back: the same request under the same key is the lookup. Adyen
    # receives it (once, however often it is asked) and its REFUND notification settles it.
    lookups = [
        await adyen.lookup_refund("re_R1", reference=charge.reference, amount=300, currency="USD")
        for _ in range(2)
    ]
    [psp] = adyen_fake.refunds
    assert [(lookup.status, lookup.reference) for lookup in lookups] == [
        (ChargeStatus.UNKNOWN, psp)
    ] * 2
    assert lookups[0].result() is None


def test_a_forged_hmac_signature_with_any_characters_is_refused_not_a_crash(
    adyen: PaymentGateway, adyen_fake: Any
) -> None:
    item = adyen_fake.notification("AUTHORISATION", "PSP1", merchant_reference="pay_1")
    item = {**item, "additionalData": {**item["additionalData"], "hmacSignature": "é=="}}
    body = orjson.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]})
    with pytest.raises(WebhookSignatureError):
        adyen.parse_webhook({"Content-Type": "application/json"}, body)
