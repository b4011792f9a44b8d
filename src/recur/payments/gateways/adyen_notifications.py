"""Adyen's standard notification webhooks: verified and read in Recur's terms (see `adyen`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from recur.payments.gateways.base import (
    GatewayWebhookEvent,
    WebhookKind,
    WebhookSignatureError,
)

NAME = "adyen"
# The merchant reference of the zero-value check made by `tokenize`: no payment of ours.
VERIFY_PREFIX = "recur-verify-"
CHARGE_EVENTS = {"AUTHORISATION"}
REFUND_EVENTS = {"REFUND", "CANCEL_OR_REFUND"}
REFUND_FAILURES = {"REFUND_FAILED", "REFUNDED_REVERSED"}
DISPUTES_OPENED = {"NOTIFICATION_OF_CHARGEBACK", "CHARGEBACK"}
DISPUTES_CLOSED = {
    "CHARGEBACK_REVERSED": "won",
    "PREARBITRATION_WON": "won",
    "SECOND_CHARGEBACK": "lost",
    "PREARBITRATION_LOST": "lost",
}


def parse_notification(body: bytes, hmac_key: str) -> GatewayWebhookEvent:
    """One NotificationRequestItem, verified by its `additionalData.hmacSignature`, and read."""
    try:
        items = orjson.loads(body)["notificationItems"]
        item = items[0]["NotificationRequestItem"]
        if len(items) != 1 or not isinstance(item, dict):
            raise ValueError("one NotificationRequestItem expected")
        given = str((item.get("additionalData") or {})["hmacSignature"])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, ValueError):
        raise WebhookSignatureError(
            "malformed_webhook", "the body is not one signed Adyen notification"
        ) from None
    # As bytes: a forged signature may hold characters compare_digest refuses in a str.
    if not hmac.compare_digest(notification_signature(item, hmac_key).encode(), given.encode()):
        raise WebhookSignatureError(
            "bad_signature", "the notification's hmacSignature does not match"
        )
    try:
        return _event(item)
    except (KeyError, TypeError, ValueError):
        raise WebhookSignatureError(
            "malformed_webhook", "the notification lacks the fields Adyen always sends"
        ) from None


def check_basic_auth(value: str | None, username: str, password: str) -> None:
    """The Basic auth Adyen sends with its webhooks when the tenant set a username."""
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    if value is None or not hmac.compare_digest(value.encode(), expected.encode()):
        raise WebhookSignatureError("bad_credentials", "the webhook's Basic auth is wrong")


def notification_signature(item: Mapping[str, Any], hmac_key: str) -> str:
    """The base64 HMAC-SHA256 Adyen puts in a notification's `additionalData.hmacSignature`."""
    amount = item.get("amount") or {}
    fields = [
        item.get("pspReference"),
        item.get("originalReference"),
        item.get("merchantAccountCode"),
        item.get("merchantReference"),
        amount.get("value"),
        amount.get("currency"),
        item.get("eventCode"),
        item.get("success"),
    ]
    signing = ":".join("" if value is None else str(value) for value in fields)
    try:
        key = binascii.unhexlify(hmac_key)
    except binascii.Error:
        raise WebhookSignatureError("bad_hmac_key", "the tenant's hmac_key is not hex") from None
    return base64.b64encode(hmac.new(key, signing.encode(), hashlib.sha256).digest()).decode()


def _event(item: Mapping[str, Any]) -> GatewayWebhookEvent:
    code, psp = str(item["eventCode"]), str(item["pspReference"])
    success = str(item["success"]).lower() == "true"
    amount = item.get("amount") or {}
    original = item.get("originalReference") or None
    merchant_reference = item.get("merchantReference") or None
    common: dict[str, Any] = {
        "gateway": NAME,
        "event_id": f"{psp}:{code}:{item['success']}",
        "gateway_type": code,
        "amount": int(amount["value"]) if "value" in amount else None,
        "currency": amount.get("currency"),
        "occurred_at": _when(item.get("eventDate")),
    }
    reason = item.get("reason") or None
    if code in CHARGE_EVENTS and not str(merchant_reference or "").startswith(VERIFY_PREFIX):
        return GatewayWebhookEvent(
            **common,
            kind=WebhookKind.CHARGE_SUCCEEDED if success else WebhookKind.CHARGE_FAILED,
            charge_reference=psp,
            idempotency_key=merchant_reference,
            failure_code=None if success else "card_declined",
            failure_message=None if success else reason,
        )
    if code in REFUND_EVENTS or code in REFUND_FAILURES:
        succeeded = success and code in REFUND_EVENTS
        return GatewayWebhookEvent(
            **common,
            kind=WebhookKind.REFUND_SUCCEEDED if succeeded else WebhookKind.REFUND_FAILED,
            charge_reference=original,
            idempotency_key=merchant_reference,
            refund_reference=psp,
            failure_code=None if succeeded else "refund_failed",
            failure_message=None if succeeded else reason,
        )
    if code in DISPUTES_OPENED or code in DISPUTES_CLOSED:
        return GatewayWebhookEvent(
            **common,
            kind=WebhookKind.DISPUTE_OPENED
            if code in DISPUTES_OPENED
            else WebhookKind.DISPUTE_CLOSED,
            charge_reference=original,
            idempotency_key=merchant_reference,
            dispute_reference=psp,
            dispute_outcome=DISPUTES_CLOSED.get(code),
        )
    return GatewayWebhookEvent(
        **common, kind=WebhookKind.OTHER, charge_reference=original or psp, idempotency_key=None
    )


def _when(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
