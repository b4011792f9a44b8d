"""The Stripe adapter (the official package) against a local fake of Stripe's API."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import Any

import pytest

from recur.kit.clock import FrozenClock
from recur.payments.gateways import build_gateway
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

STRIPE_WEBHOOK_SECRET = "whsec_test_fake_secret"  # the `stripe` fixture's


def _card(number: str = "4242424242424242", exp_month: int = 12, exp_year: int = 2040) -> CardIn:
    return CardIn(number=number, exp_month=exp_month, exp_year=exp_year, cvc="123")


async def _token(stripe: PaymentGateway, number: str = "4242424242424242") -> TokenizedCard:
    return await stripe.tokenize(_card(number))


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_tokenize_verifies_the_card_and_attaches_it_to_a_customer(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await stripe.tokenize(_card("5555 5555 5555 4444"))
    customer, _, method = card.token.partition("/")
    assert customer.startswith("cus_") and method.startswith("pm_")
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == (
        "mastercard",
        "4444",
        12,
        2040,
    )
    assert stripe_fake.payment_methods[method]["customer"] == customer
    setup = [r for r in stripe_fake.requests if r["path"] == "/v1/setup_intents"]
    assert setup[0]["params"] == {
        "customer": customer,
        "payment_method": method,
        "confirm": "true",
        "usage": "off_session",
        "allowed_payment_method_types": ["card"],
    }


@pytest.mark.parametrize(
    ("number", "exp_year", "code"),
    [
        ("4000000000000002", 2040, "card_declined"),
        ("4000000000009995", 2040, "insufficient_funds"),
        ("4000000000000119", 2040, "processing_error"),
        ("4242424242424241", 2040, "incorrect_number"),
        ("4242424242424242", 2029, "invalid_expiry_year"),
    ],
)
async def test_tokenize_refusals_are_declines(
    stripe: PaymentGateway, number: str, exp_year: int, code: str
) -> None:
    with pytest.raises(GatewayDecline) as declined:
        await stripe.tokenize(_card(number, exp_year=exp_year))
    assert declined.value.code == code
    assert number not in declined.value.message


async def test_charge_makes_an_off_session_payment_intent_with_our_key(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    result = await stripe.charge(card.token, 1999, "USD", idempotency_key="pay_A1")
    assert result.succeeded and result.reference and result.reference.startswith("pi_")
    [intent] = stripe_fake.intents_with_key("pay_A1")
    assert (intent["id"], intent["amount"], intent["currency"]) == (result.reference, 1999, "usd")
    [request] = [r for r in stripe_fake.requests if r["path"] == "/v1/payment_intents"]
    assert request["key"] == "pay_A1"
    assert request["params"]["confirm"] == request["params"]["off_session"] == "true"
    assert request["params"]["payment_method"] == card.token.partition("/")[2]
    assert request["params"]["metadata"] == {"recur_idempotency_key": "pay_A1"}


async def test_a_charge_decline_is_a_failed_result_and_lookup_agrees(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe, "4000000000000341")
    result = await stripe.charge(card.token, 500, "EUR", idempotency_key="pay_D1")
    assert not result.succeeded
    assert result.failure_code == "card_declined"
    assert result.failure_message == "Your card was declined."
    [intent] = stripe_fake.intents_with_key("pay_D1")
    assert result.reference == intent["id"]
    lookup = await stripe.lookup_charge("pay_D1", token=card.token, amount=500, currency="EUR")
    assert (lookup.status, lookup.reference, lookup.failure_code) == (
        ChargeStatus.FAILED,
        intent["id"],
        "card_declined",
    )


async def test_the_same_key_never_makes_two_charges(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    first = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_S1")
    again = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_S1")
    assert first == again
    assert len(stripe_fake.intents_with_key("pay_S1")) == 1
    declined = await _token(stripe, "4000000000000341")
    for _ in range(2):
        result = await stripe.charge(declined.token, 1000, "USD", idempotency_key="pay_S2")
        assert result.failure_code == "card_declined"
    assert len(stripe_fake.intents_with_key("pay_S2")) == 1
    assert len(stripe_fake.payment_intents) == 2


async def test_rate_limits_and_a_refused_key_are_retriable_and_charge_nothing(
    stripe: PaymentGateway, stripe_fake: Any, clock: FrozenClock
) -> None:
    card = await _token(stripe)
    stripe_fake.faults.fail_next(
        429,
        {"error": {"type": "invalid_request_error", "message": "Too many requests"}},
        headers={"Retry-After": "2"},
    )
    with pytest.raises(GatewayRetriableError) as limited:
        await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_R1")
    assert (limited.value.code, limited.value.retry_after) == ("rate_limited", 2.0)

    wrong_key = build_gateway(
        "stripe", {"api_key": "sk_test_not_this_one"}, clock=clock, base_url=stripe_fake.url
    )
    try:
        with pytest.raises(GatewayRetriableError) as refused:
            await wrong_key.charge(card.token, 1000, "USD", idempotency_key="pay_R1")
        assert refused.value.code == "gateway_auth_failed"
        assert "sk_test_not_this_one" not in str(refused.value)
    finally:
        await wrong_key.aclose()
    assert stripe_fake.intents_with_key("pay_R1") == []
    # Nothing was done with the key: charging with it now charges once.
    assert (await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_R1")).succeeded
    assert len(stripe_fake.intents_with_key("pay_R1")) == 1


async def test_a_refused_connection_is_retriable(clock: FrozenClock) -> None:
    gateway = build_gateway(
        "stripe", {"api_key": "sk_test_x1234567"}, clock=clock, base_url=_closed_port_url()
    )
    try:
        with pytest.raises(GatewayRetriableError) as unreachable:
            await gateway.charge("cus_1/pm_1", 1000, "USD", idempotency_key="pay_C1")
        assert unreachable.value.code == "connection_failed"
    finally:
        await gateway.aclose()


async def test_a_5xx_is_an_unknown_outcome_settled_by_lookup(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    stripe_fake.faults.fail_next(500, {"error": {"type": "api_error", "message": "oops"}})
    with pytest.raises(GatewayOutcomeUnknown) as unknown:
        await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_E1")
    assert unknown.value.code == "gateway_error"
    lookup = await stripe.lookup_charge("pay_E1", token=card.token, amount=1000, currency="USD")
    assert lookup.status == ChargeStatus.NOT_FOUND
    assert lookup.result() is None


async def test_timeout_after_the_charge_was_made_then_lookup_finds_it(
    stripe: PaymentGateway, impatient_stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    stripe_fake.faults.stall_next(processed=True)
    with pytest.raises(GatewayOutcomeUnknown) as unknown:
        await impatient_stripe.charge(card.token, 1000, "USD", idempotency_key="pay_T1")
    assert unknown.value.code == "timeout"
    await stripe_fake.faults.wait_stalled()
    [intent] = stripe_fake.intents_with_key("pay_T1")

    lookup = await stripe.lookup_charge("pay_T1", token=card.token, amount=1000, currency="USD")
    assert (lookup.status, lookup.reference) == (ChargeStatus.SUCCEEDED, intent["id"])
    settled = lookup.result()
    assert settled is not None and settled.succeeded and settled.reference == intent["id"]
    # Charging again with the key replays Stripe's first answer: still one charge.
    again = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_T1")
    assert again.reference == intent["id"]
    assert len(stripe_fake.intents_with_key("pay_T1")) == 1


async def test_timeout_before_the_charge_was_made_then_lookup_finds_nothing(
    stripe: PaymentGateway, impatient_stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    stripe_fake.faults.stall_next(processed=False)
    with pytest.raises(GatewayOutcomeUnknown):
        await impatient_stripe.charge(card.token, 1000, "USD", idempotency_key="pay_T2")
    await stripe_fake.faults.wait_stalled()
    lookup = await stripe.lookup_charge("pay_T2", token=card.token, amount=1000, currency="USD")
    assert lookup.status == ChargeStatus.NOT_FOUND
    assert stripe_fake.intents_with_key("pay_T2") == []


async def test_lookup_searches_the_metadata_when_the_list_does_not_have_it(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    result = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_it's")
    # A token without its customer (made elsewhere): only the search can find the charge.
    method_only = card.token.partition("/")[2]
    lookup = await stripe.lookup_charge("pay_it's", token=method_only, amount=1000, currency="USD")
    assert (lookup.status, lookup.reference) == (ChargeStatus.SUCCEEDED, result.reference)
    [search] = [r for r in stripe_fake.requests if r["path"].endswith("/search")]
    assert search["params"]["query"] == "metadata['recur_idempotency_key']:'pay_it\\'s'"


async def test_a_key_still_in_flight_is_an_unknown_outcome(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    stripe_fake.hold_in_flight("pay_F1")
    with pytest.raises(GatewayOutcomeUnknown) as unknown:
        await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_F1")
    assert unknown.value.code == "in_progress"


async def test_partial_refunds_until_nothing_is_left(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    charge = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_P1")
    assert charge.reference is not None
    first = await stripe.refund(charge.reference, 300, "USD", idempotency_key="re_1")
    assert first.succeeded and first.reference and first.reference.startswith("re_")
    assert await stripe.refund(charge.reference, 300, "USD", idempotency_key="re_1") == first
    too_much = await stripe.refund(charge.reference, 800, "USD", idempotency_key="re_2")
    assert (too_much.succeeded, too_much.failure_code) == (False, "amount_too_large")
    rest = await stripe.refund(charge.reference, 700, "USD", idempotency_key="re_3")
    assert rest.succeeded
    done = await stripe.refund(charge.reference, 1, "USD", idempotency_key="re_4")
    assert (done.succeeded, done.failure_code) == (False, "charge_already_refunded")
    assert [r["amount"] for r in stripe_fake.refunds.values()] == [300, 700]
    assert stripe_fake.refunds[first.reference]["metadata"] == {"recur_idempotency_key": "re_1"}


async def test_a_refund_timing_out_is_an_unknown_outcome(
    stripe: PaymentGateway, impatient_stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    charge = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_P2")
    assert charge.reference is not None
    stripe_fake.faults.stall_next(processed=True)
    with pytest.raises(GatewayOutcomeUnknown):
        await impatient_stripe.refund(charge.reference, 100, "USD", idempotency_key="re_T")
    await stripe_fake.faults.wait_stalled()
    again = await stripe.refund(charge.reference, 100, "USD", idempotency_key="re_T")
    assert again.succeeded and len(stripe_fake.refunds) == 1


async def test_webhooks_of_charges_refunds_and_disputes(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe)
    charge = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_W1")
    assert charge.reference is not None
    succeeded = stripe_fake.last_event("payment_intent.succeeded")
    event = stripe.parse_webhook(*stripe_fake.signed(succeeded, STRIPE_WEBHOOK_SECRET))
    assert (event.gateway, event.event_id, event.kind, event.gateway_type) == (
        "stripe",
        succeeded["id"],
        WebhookKind.CHARGE_SUCCEEDED,
        "payment_intent.succeeded",
    )
    assert (event.charge_reference, event.idempotency_key, event.amount, event.currency) == (
        charge.reference,
        "pay_W1",
        1000,
        "USD",
    )

    refund = await stripe.refund(charge.reference, 250, "USD", idempotency_key="re_W1")
    refunded = stripe.parse_webhook(
        *stripe_fake.signed(stripe_fake.last_event("refund.created"), STRIPE_WEBHOOK_SECRET)
    )
    assert (refunded.kind, refunded.refund_reference, refunded.idempotency_key) == (
        WebhookKind.REFUND_SUCCEEDED,
        refund.reference,
        "re_W1",
    )
    assert (refunded.charge_reference, refunded.amount) == (charge.reference, 250)

    dispute_id = stripe_fake.open_dispute(charge.reference)
    opened = stripe.parse_webhook(
        *stripe_fake.signed(stripe_fake.last_event("charge.dispute.created"), STRIPE_WEBHOOK_SECRET)
    )
    assert (opened.kind, opened.dispute_reference, opened.charge_reference, opened.amount) == (
        WebhookKind.DISPUTE_OPENED,
        dispute_id,
        charge.reference,
        1000,
    )
    stripe_fake.close_dispute(dispute_id, "lost")
    closed = stripe.parse_webhook(
        *stripe_fake.signed(stripe_fake.last_event("charge.dispute.closed"), STRIPE_WEBHOOK_SECRET)
    )
    assert (closed.kind, closed.dispute_outcome) == (WebhookKind.DISPUTE_CLOSED, "lost")

    other = stripe.parse_webhook(
        *stripe_fake.signed(
            stripe_fake.event("customer.created", {"id": "cus_1"}), STRIPE_WEBHOOK_SECRET
        )
    )
    assert other.kind == WebhookKind.OTHER


async def test_a_failed_payment_webhook_carries_the_decline(
    stripe: PaymentGateway, stripe_fake: Any
) -> None:
    card = await _token(stripe, "4000000000000341")
    await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_W2")
    failed = stripe_fake.last_event("payment_intent.payment_failed")
    event = stripe.parse_webhook(*stripe_fake.signed(failed, STRIPE_WEBHOOK_SECRET))
    assert (event.kind, event.idempotency_key, event.failure_code) == (
        WebhookKind.CHARGE_FAILED,
        "pay_W2",
        "card_declined",
    )


async def test_webhooks_with_a_bad_signature_are_rejected(
    stripe: PaymentGateway, stripe_fake: Any, clock: FrozenClock
) -> None:
    card = await _token(stripe)
    await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_W3")
    event = stripe_fake.last_event("payment_intent.succeeded")

    headers, body = stripe_fake.signed(event, "whsec_someone_else")
    with pytest.raises(WebhookSignatureError) as wrong_secret:
        stripe.parse_webhook(headers, body)
    assert wrong_secret.value.code == "bad_signature"

    headers, body = stripe_fake.signed(event, STRIPE_WEBHOOK_SECRET)
    with pytest.raises(WebhookSignatureError):
        stripe.parse_webhook(headers, body.replace(b"1000", b"9000"))
    with pytest.raises(WebhookSignatureError):
        stripe.parse_webhook({"Content-Type": "application/json"}, body)
    # Header names are case-insensitive, as HTTP has them.
    lower = {k.lower(): v for k, v in headers.items()}
    assert stripe.parse_webhook(lower, body).event_id == event["id"]

    clock.set(clock.now() + timedelta(minutes=10))
    with pytest.raises(WebhookSignatureError) as stale:
        stripe.parse_webhook(headers, body)
    assert stale.value.code == "stale_signature"


async def test_webhooks_need_the_tenants_webhook_secret(
    stripe_fake: Any, clock: FrozenClock
) -> None:
    gateway = build_gateway("stripe", {"api_key": stripe_fake.api_key}, clock=clock)
    event = stripe_fake.event("customer.created", {"id": "cus_1"})
    with pytest.raises(WebhookSignatureError) as missing:
        gateway.parse_webhook(*stripe_fake.signed(event, STRIPE_WEBHOOK_SECRET))
    assert missing.value.code == "no_webhook_secret"
    await gateway.aclose()


@pytest.mark.parametrize("processed", [True, False])
async def test_a_refund_whose_answer_was_lost_is_found_by_its_key(
    stripe: PaymentGateway, impatient_stripe: PaymentGateway, stripe_fake: Any, processed: bool
) -> None:
    card = await _token(stripe)
    charged = await stripe.charge(card.token, 1000, "USD", idempotency_key="pay_R1")
    assert charged.reference is not None
    stripe_fake.faults.stall_next(processed=processed)
    with pytest.raises(GatewayOutcomeUnknown):
        await impatient_stripe.refund(charged.reference, 300, "USD", idempotency_key="re_R1")
    await stripe_fake.faults.wait_stalled()

    lookup = await stripe.lookup_refund(
        "re_R1", reference=charged.reference, amount=300, currency="USD"
    )
    if processed:
        [made] = stripe_fake.refunds.values()
        assert (lookup.status, lookup.reference) == (ChargeStatus.SUCCEEDED, made["id"])
    else:
        assert stripe_fake.refunds == {}
        assert (lookup.status, lookup.result()) == (ChargeStatus.NOT_FOUND, None)
    # Another refund of the same charge is never taken for this one.
    other = await stripe.lookup_refund(
        "re_other", reference=charged.reference, amount=300, currency="USD"
    )
    assert other.status == ChargeStatus.NOT_FOUND
