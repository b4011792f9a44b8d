"""Stripe's objects and events, read in Recur's terms (see `stripe_gateway`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import stripe

from recur.payments.gateways.base import (
    WEBHOOK_TOLERANCE_SECONDS,
    ChargeLookup,
    ChargeStatus,
    GatewayWebhookEvent,
    WebhookKind,
    WebhookSignatureError,
    header,
)

NAME = "stripe"
KEY_METADATA = "recur_idempotency_key"
# Stripe's generic decline carries no more than its code says.
GENERIC_DECLINES = {None, "", "generic_decline"}


def parse_event(
    headers: Mapping[str, str], body: bytes, secret: str, now: datetime
) -> GatewayWebhookEvent:
    """A webhook verified by its `Stripe-Signature` (with the package's own check) and read.

    The package would judge the timestamp's age by `time.time()`; it is judged here against
    `now`, from Recur's clock, so test clocks work.
    """
    signature = header(headers, "Stripe-Signature")
    try:
        stripe.WebhookSignature.verify_header(body, signature, secret, None)
    except stripe.SignatureVerificationError:
        raise WebhookSignatureError(
            "bad_signature", "the Stripe-Signature does not match the body"
        ) from None
    except UnicodeDecodeError:
        raise WebhookSignatureError("malformed_webhook", "the body is not UTF-8") from None
    assert signature is not None
    if abs(now.timestamp() - _signature_timestamp(signature)) > WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookSignatureError("stale_signature", "the webhook's timestamp is too old")
    try:
        return _event(orjson.loads(body))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise WebhookSignatureError("malformed_webhook", "the body is not a Stripe event") from None


def intent_status(intent: dict[str, Any]) -> ChargeLookup:
    """What a PaymentIntent says of its charge."""
    status, reference = intent.get("status"), intent.get("id")
    if status == "succeeded":
        return ChargeLookup(ChargeStatus.SUCCEEDED, reference)
    if status in ("requires_payment_method", "canceled", "requires_action"):
        error = intent.get("last_payment_error") or {}
        code = error.get("code") or "card_declined"
        if code == "card_declined" and error.get("decline_code") not in GENERIC_DECLINES:
            code = error["decline_code"]
        if status == "canceled" and not error:
            code = "canceled"
        message = error.get("message") or "Your card was declined."
        return ChargeLookup(ChargeStatus.FAILED, reference, code, message)
    return ChargeLookup(ChargeStatus.UNKNOWN, reference)  # processing, requires_confirmation


def _signature_timestamp(signature: str) -> int:
    for item in signature.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t" and value.strip().isdigit():
            return int(value)
    raise WebhookSignatureError("bad_signature", "the Stripe-Signature has no timestamp")


def _currency(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) else None


def _event(event: dict[str, Any]) -> GatewayWebhookEvent:
    kind_of = event["type"]
    obj = event["data"]["object"]
    metadata = obj.get("metadata") or {}
    common: dict[str, Any] = {
        "gateway": NAME,
        "event_id": str(event["id"]),
        "gateway_type": kind_of,
        "amount": obj.get("amount"),
        "currency": _currency(obj.get("currency")),
        "occurred_at": datetime.fromtimestamp(int(event["created"]), UTC),
    }
    if kind_of in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        failed = kind_of == "payment_intent.payment_failed"
        lookup = intent_status(obj) if failed else None
        return GatewayWebhookEvent(
            **common,
            kind=WebhookKind.CHARGE_FAILED if failed else WebhookKind.CHARGE_SUCCEEDED,
            charge_reference=obj["id"],
            idempotency_key=metadata.get(KEY_METADATA),
            failure_code=lookup.failure_code if lookup else None,
            failure_message=lookup.failure_message if lookup else None,
        )
    if kind_of in ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated"):
        status = "failed" if kind_of == "refund.failed" else obj.get("status")
        kind = {
            "succeeded": WebhookKind.REFUND_SUCCEEDED,
            "failed": WebhookKind.REFUND_FAILED,
            "canceled": WebhookKind.REFUND_FAILED,
        }.get(status, WebhookKind.OTHER)
        return GatewayWebhookEvent(
            **common,
            kind=kind,
            charge_reference=obj.get("payment_intent") or obj.get("charge"),
            idempotency_key=metadata.get(KEY_METADATA),
            refund_reference=obj["id"],
            failure_code=obj.get("failure_reason") if kind == WebhookKind.REFUND_FAILED else None,
        )
    if kind_of in ("charge.dispute.created", "charge.dispute.closed"):
        closed = kind_of == "charge.dispute.closed"
        outcome = None
        if closed:
            outcome = "won" if obj.get("status") in ("won", "warning_closed") else "lost"
        return GatewayWebhookEvent(
            **common,
            kind=WebhookKind.DISPUTE_CLOSED if closed else WebhookKind.DISPUTE_OPENED,
            charge_reference=obj.get("payment_intent") or obj.get("charge"),
            idempotency_key=None,
            dispute_reference=obj["id"],
            dispute_outcome=outcome,
        )
    return GatewayWebhookEvent(
        **common, kind=WebhookKind.OTHER, charge_reference=None, idempotency_key=None
    )
