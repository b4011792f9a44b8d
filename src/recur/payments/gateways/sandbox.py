"""The built-in `sandbox` gateway: no money moves; Stripe's test cards say what happens.

| number           | attach (tokenize)           | charge                     |
|------------------|-----------------------------|----------------------------|
| 4242424242424242 | ok                          | succeeds                   |
| 4000000000000002 | declined: card_declined     | -                          |
| 4000000000009995 | declined: insufficient_funds| -                          |
| 4000000000000119 | declined: processing_error  | -                          |
| 4000000000000341 | ok                          | declined: card_declined    |
| any other number passing the Luhn check: ok, and every charge succeeds |

Like Stripe, the sandbox verifies a card when it is attached, so the cards that decline do so at
tokenize time and nothing is kept. A card failing the Luhn check is `incorrect_number`, an expiry
before this month (by the runtime's clock) is `expired_card`.

The sandbox keeps no card number, not even in memory. Its token is its own state: it encodes the
card's test outcome and random bits (`tok_sandbox_<outcome>_<random>`), and nothing else. Charge
and refund references derive from the idempotency key, so a retried call gives the same reference
and the same outcome, as a real gateway's idempotency would.

It keeps no state: `lookup_charge` answers from the token and the key what a charge with that
key did (or would do). It can be told to misbehave (`sandbox_faults`): latency, timeouts whose
truth `lookup_charge` tells, retriable failures. Its webhooks are signed like Stripe's, with the
tenant's `webhook_secret`: `Recur-Sandbox-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`; `signed_webhook` makes one, for tests and for trying a webhook endpoint out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from recur.kit.clock import Clock
from recur.payments.gateways.base import (
    WEBHOOK_TOLERANCE_SECONDS,
    ChargeLookup,
    ChargeResult,
    ChargeStatus,
    GatewayDecline,
    GatewayOutcomeUnknown,
    GatewayRetriableError,
    GatewayWebhookEvent,
    RefundLookup,
    RefundResult,
    TokenizedCard,
    WebhookKind,
    WebhookSignatureError,
    header,
    read_settings,
)
from recur.payments.gateways.sandbox_faults import Fate, Operation, SandboxFaults
from recur.payments.schemas import CardIn

NAME = "sandbox"
TOKEN_PREFIX = "tok_sandbox_"  # noqa: S105 (a prefix, not a secret)
CHARGE_PREFIX = "ch_sandbox_"
REFUND_PREFIX = "re_sandbox_"
SIGNATURE_HEADER = "Recur-Sandbox-Signature"

# Outcomes a token can carry: charges succeed, or every charge is declined.
CHARGE_OK = "ok"
CHARGE_DECLINED = "declined"

MESSAGES = {
    "card_declined": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "processing_error": "An error occurred while processing your card. Try again later.",
    "incorrect_number": "Your card number is incorrect.",
    "expired_card": "Your card has expired.",
    "invalid_cvc": "Your card's security code is invalid.",
    "invalid_token": "The payment method is not one this gateway issued.",
    "invalid_charge": "The charge to refund is not one this gateway made.",
}

# Stripe's test cards that are refused when attached.
DECLINED_AT_ATTACH = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
    "4000000000000119": "processing_error",
}
DECLINED_AT_CHARGE = {"4000000000000341"}


def normalize_number(number: str) -> str | None:
    """The card's digits, without the spaces or dashes people type; None if it is no card number."""
    digits = number.replace(" ", "").replace("-", "")
    if not digits.isascii() or not digits.isdigit() or not 12 <= len(digits) <= 19:
        return None
    return digits


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every card number carries (ISO/IEC 7812)."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def card_brand(digits: str) -> str:
    """The card network, from the number's leading digits (its IIN range)."""

    def prefix(length: int) -> int:
        return int(digits[:length]) if len(digits) >= length and digits[:length].isdigit() else -1

    if digits.startswith("4"):
        return "visa"
    if 51 <= prefix(2) <= 55 or 2221 <= prefix(4) <= 2720:
        return "mastercard"
    if prefix(2) in (34, 37):
        return "amex"
    if prefix(4) == 6011 or prefix(2) == 65:
        return "discover"
    if 3528 <= prefix(4) <= 3589:
        return "jcb"
    if prefix(2) in (36, 38) or 300 <= prefix(3) <= 305:
        return "diners"
    return "unknown"


def _decline(code: str) -> GatewayDecline:
    return GatewayDecline(code, MESSAGES[code])


def _reference(prefix: str, idempotency_key: str) -> str:
    return prefix + hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]


class SandboxSettings(BaseModel):
    """A tenant's sandbox settings, kept as its `sandbox` gateway credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    faults: SandboxFaults = Field(default_factory=SandboxFaults)
    webhook_secret: str | None = Field(default=None, min_length=8, max_length=200)


def sandbox_settings(credentials: Mapping[str, Any]) -> SandboxSettings:
    """The settings in a tenant's sandbox credentials; GatewayConfigError names a bad field."""
    return read_settings(SandboxSettings, credentials, NAME)


class SandboxGateway:
    """The test gateway every installation has; see the module docstring for its cards."""

    name = NAME

    def __init__(
        self,
        clock: Clock,
        *,
        faults: SandboxFaults | None = None,
        webhook_secret: str | None = None,
    ):
        self._clock = clock
        self.faults = faults or SandboxFaults()
        self._webhook_secret = webhook_secret

    @classmethod
    def from_credentials(cls, clock: Clock, credentials: Mapping[str, Any]) -> SandboxGateway:
        """The sandbox as a tenant set it up (`{"faults": {...}, "webhook_secret": ...}`)."""
        settings = sandbox_settings(credentials)
        return cls(clock, faults=settings.faults, webhook_secret=settings.webhook_secret)

    async def tokenize(self, card: CardIn) -> TokenizedCard:
        await self._latency()
        digits = normalize_number(card.number)
        if digits is None or not luhn_valid(digits):
            raise _decline("incorrect_number")
        today = self._clock.now()
        if (card.exp_year, card.exp_month) < (today.year, today.month):
            raise _decline("expired_card")
        if card.cvc is not None and not (card.cvc.isascii() and card.cvc.isdigit()):
            raise _decline("invalid_cvc")
        if digits in DECLINED_AT_ATTACH:
            raise _decline(DECLINED_AT_ATTACH[digits])
        outcome = CHARGE_DECLINED if digits in DECLINED_AT_CHARGE else CHARGE_OK
        return TokenizedCard(
            token=f"{TOKEN_PREFIX}{outcome}_{secrets.token_hex(12)}",
            brand=card_brand(digits),
            last4=digits[-4:],
            exp_month=card.exp_month,
            exp_year=card.exp_year,
        )

    async def charge(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> ChargeResult:
        await self._latency()
        await self._misbehave("charge", idempotency_key)
        return _charge_outcome(token, idempotency_key)

    async def refund(
        self, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        await self._latency()
        await self._misbehave("refund", idempotency_key)
        return _refund_outcome(reference, idempotency_key)

    async def lookup_charge(
        self, idempotency_key: str, *, token: str, amount: int, currency: str
    ) -> ChargeLookup:
        await self._latency()
        if self.faults.fate("charge", idempotency_key) in (Fate.FAIL, Fate.TIMEOUT_LOST):
            return ChargeLookup(ChargeStatus.NOT_FOUND)
        result = _charge_outcome(token, idempotency_key)
        return ChargeLookup(
            ChargeStatus.SUCCEEDED if result.succeeded else ChargeStatus.FAILED,
            result.reference,
            result.failure_code,
            result.failure_message,
        )

    async def lookup_refund(
        self, idempotency_key: str, *, reference: str, amount: int, currency: str
    ) -> RefundLookup:
        await self._latency()
        if self.faults.fate("refund", idempotency_key) in (Fate.FAIL, Fate.TIMEOUT_LOST):
            return RefundLookup(ChargeStatus.NOT_FOUND)
        return RefundLookup.settled(_refund_outcome(reference, idempotency_key))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayWebhookEvent:
        if not self._webhook_secret:
            raise WebhookSignatureError(
                "no_webhook_secret", "the sandbox has no webhook_secret set for this tenant"
            )
        _verify_timestamped(
            header(headers, SIGNATURE_HEADER), body, self._webhook_secret, self._clock.now()
        )
        try:
            event = orjson.loads(body)
            data = event["data"]
            return GatewayWebhookEvent(
                gateway=NAME,
                event_id=str(event["id"]),
                kind=WebhookKind(event["type"]),
                gateway_type=str(event["type"]),
                charge_reference=data.get("charge_reference"),
                idempotency_key=data.get("idempotency_key"),
                amount=data.get("amount"),
                currency=data.get("currency"),
                refund_reference=data.get("refund_reference"),
                dispute_reference=data.get("dispute_reference"),
                dispute_outcome=data.get("dispute_outcome"),
                failure_code=data.get("failure_code"),
                failure_message=data.get("failure_message"),
                occurred_at=datetime.fromtimestamp(int(event["created"]), UTC),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise WebhookSignatureError(
                "malformed_webhook", "the sandbox webhook's body is not a sandbox event"
            ) from None

    async def aclose(self) -> None:
        """Nothing to close: the sandbox has no connections."""

    async def _latency(self) -> None:
        if self.faults.latency_seconds:
            await asyncio.sleep(self.faults.latency_seconds)

    async def _misbehave(self, operation: Operation, idempotency_key: str) -> None:
        fate = self.faults.fate(operation, idempotency_key)
        if fate == Fate.FAIL:
            raise GatewayRetriableError(
                "gateway_unavailable", f"the sandbox refused this {operation} (fault injection)"
            )
        if fate in (Fate.TIMEOUT_DONE, Fate.TIMEOUT_LOST):
            if self.faults.timeout_after_seconds:
                await asyncio.sleep(self.faults.timeout_after_seconds)
            raise GatewayOutcomeUnknown(
                "timeout", f"the sandbox did not answer this {operation} (fault injection)"
            )


def _charge_outcome(token: str, idempotency_key: str) -> ChargeResult:
    outcome = token.removeprefix(TOKEN_PREFIX).partition("_")[0]
    if not token.startswith(TOKEN_PREFIX) or outcome not in (CHARGE_OK, CHARGE_DECLINED):
        return ChargeResult(False, None, "invalid_token", MESSAGES["invalid_token"])
    reference = _reference(CHARGE_PREFIX, idempotency_key)
    if outcome == CHARGE_DECLINED:
        return ChargeResult(False, reference, "card_declined", MESSAGES["card_declined"])
    return ChargeResult(True, reference)


def timestamped_signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `t=...,v1=...` signature of `body` at `timestamp` (Stripe's scheme)."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _verify_timestamped(value: str | None, body: bytes, secret: str, now: datetime) -> None:
    if not value:
        raise WebhookSignatureError("no_signature", f"no {SIGNATURE_HEADER} header")
    parts = [item.partition("=") for item in value.split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    signatures = [v for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        raise WebhookSignatureError("bad_signature", f"{SIGNATURE_HEADER} is malformed")
    timestamp = int(stamps[0])
    expected = timestamped_signature(secret, timestamp, body).partition(",v1=")[2]
    # As bytes: a forged header may hold characters compare_digest refuses in a str.
    if not any(hmac.compare_digest(expected.encode(), s.strip().encode()) for s in signatures):
        raise WebhookSignatureError("bad_signature", "the webhook's signature does not match")
    if abs(now.timestamp() - timestamp) > WEBHOOK_TOLERANCE_SECONDS:
        raise WebhookSignatureError("stale_signature", "the webhook's timestamp is too old")


def signed_webhook(
    secret: str,
    event_id: str,
    kind: WebhookKind,
    at: datetime,
    **data: Any,
) -> tuple[dict[str, str], bytes]:
    """The headers and body of a sandbox webhook as the sandbox would send it."""
    timestamp = int(at.timestamp())
    body = orjson.dumps({"id": event_id, "type": kind.value, "created": timestamp, "data": data})
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: timestamped_signature(secret, timestamp, body),
    }
    return headers, body


def _refund_outcome(reference: str, idempotency_key: str) -> RefundResult:
    """What the sandbox does with a refund that reaches it."""
    if not reference.startswith(CHARGE_PREFIX):
        return RefundResult(False, None, "invalid_charge", MESSAGES["invalid_charge"])
    return RefundResult(True, _reference(REFUND_PREFIX, idempotency_key))
