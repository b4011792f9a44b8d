"""The one interface every payment gateway adapter implements.

Payments talks to a gateway only through `PaymentGateway`, so adding Stripe, Adyen or a manual
gateway, and routing between them, adds adapters without touching the service.

What a call can end in, and what the caller does about it:

| outcome                      | comes back as             | the caller                            |
|------------------------------|---------------------------|---------------------------------------|
| charged / refunded           | result, `succeeded=True`  | settles                               |
| declined (a hard no)         | result, `succeeded=False` | settles failed; never tries elsewhere |
| card refused at tokenize     | `GatewayDecline`          | keeps nothing                         |
| not done, certainly          | `GatewayRetriableError`   | tries later, or the next gateway      |
| maybe done, or done later    | `GatewayOutcomeUnknown`   | leaves it pending for `lookup_charge` |
|                              |                           | or a webhook; never fails over        |

"Maybe done" covers a timeout after the request was sent, a 5xx, a connection lost mid-way,
and a gateway that settles later by design (a refund Adyen has only received, a bank transfer
awaiting an operator). Every charge and refund carries our idempotency key, so sending the same
call again with the same key never charges twice; sending it to *another* gateway could.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from recur.payments.schemas import CardIn

SettingsT = TypeVar("SettingsT", bound=BaseModel)

# How far a webhook's signed timestamp may be from our clock: Stripe's default tolerance.
WEBHOOK_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class TokenizedCard:
    """What may be kept of a card: the gateway's token and what a customer sees on a receipt."""

    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class ChargeResult:
    """A settled charge: it succeeded, or the gateway declined it."""

    succeeded: bool
    reference: str | None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class RefundResult:
    """A settled refund: it succeeded, or the gateway refused it."""

    succeeded: bool
    reference: str | None
    failure_code: str | None = None
    failure_message: str | None = None


class ChargeStatus(StrEnum):
    """What a gateway knows of a charge, asked by our idempotency key."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # The gateway has no charge with that key: it never arrived (safe to charge again).
    NOT_FOUND = "not_found"
    # The gateway has it but has not decided (processing, awaiting an operator): ask later.
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ChargeLookup:
    """The answer of `lookup_charge`."""

    status: ChargeStatus
    reference: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    def result(self) -> ChargeResult | None:
        """The settled result to write on the payment; None while it is not settled."""
        if self.status == ChargeStatus.SUCCEEDED:
            return ChargeResult(True, self.reference)
        if self.status == ChargeStatus.FAILED:
            return ChargeResult(False, self.reference, self.failure_code, self.failure_message)
        return None


@dataclass(frozen=True)
class RefundLookup:
    """The answer of `lookup_refund`: what a gateway knows of the refund sent with our key
    (the same statuses as a charge's)."""

    status: ChargeStatus
    reference: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    @classmethod
    def settled(cls, result: RefundResult) -> RefundLookup:
        """The lookup of a refund the gateway has answered."""
        return cls(
            ChargeStatus.SUCCEEDED if result.succeeded else ChargeStatus.FAILED,
            result.reference,
            result.failure_code,
            result.failure_message,
        )

    def result(self) -> RefundResult | None:
        """The settled result to write on the refund; None while it is not settled."""
        if self.status == ChargeStatus.SUCCEEDED:
            return RefundResult(True, self.reference)
        if self.status == ChargeStatus.FAILED:
            return RefundResult(False, self.reference, self.failure_code, self.failure_message)
        return None


class WebhookKind(StrEnum):
    """The gateway events Recur acts on, whatever the gateway calls them."""

    CHARGE_SUCCEEDED = "charge.succeeded"
    CHARGE_FAILED = "charge.failed"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    # A dispute or chargeback was opened: the money is, or is about to be, taken back.
    DISPUTE_OPENED = "dispute.opened"
    # The dispute is over; `dispute_outcome` says who won.
    DISPUTE_CLOSED = "dispute.closed"
    # Verified, but nothing Recur acts on (Stripe sends hundreds of event types).
    OTHER = "other"


@dataclass(frozen=True)
class GatewayWebhookEvent:
    """One verified gateway webhook, in Recur's terms.

    `event_id` is unique per gateway and stable across the gateway's redeliveries: store events
    by (gateway, event_id) once. `idempotency_key` is our key of the object the event is about
    when the gateway echoes it back: the payment's for charge and dispute events, the refund's
    for refund events. `charge_reference` is always the gateway's reference of the charge (the
    one kept as the payment's `gateway_reference`).
    """

    gateway: str
    event_id: str
    kind: WebhookKind
    gateway_type: str  # the gateway's own name of the event, for logs and support
    charge_reference: str | None
    idempotency_key: str | None
    amount: int | None
    currency: str | None
    refund_reference: str | None = None
    dispute_reference: str | None = None
    dispute_outcome: str | None = None  # "won" or "lost", on dispute.closed
    failure_code: str | None = None
    failure_message: str | None = None
    occurred_at: datetime | None = None


class GatewayDecline(Exception):
    """The gateway refused the card. `message` is safe to show: it never contains the number."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class GatewayError(Exception):
    """A gateway call that ended in neither a result nor a decline. `message` never holds a
    card number or a credential."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class GatewayRetriableError(GatewayError):
    """The gateway certainly did not act: the connection was refused, the gateway said so
    (rate limited, unavailable before processing) or refused our credentials. Safe to send
    again later, or to the next gateway of the route. From `lookup_charge`: the question
    could not be answered now; ask it again later."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None):
        super().__init__(code, message)
        self.retry_after = retry_after


class GatewayOutcomeUnknown(GatewayError):
    """The call may have been acted on, or will be settled later: a timeout after the request
    was sent, a 5xx, a connection lost mid-way, a charge the gateway is still processing, a
    bank transfer awaiting an operator. Leave the payment pending and settle it from
    `lookup_charge` or a webhook. Never send it to another gateway: it may be charged here.

    `reference` is the gateway's reference when it gave one.
    """

    def __init__(self, code: str, message: str, *, reference: str | None = None):
        super().__init__(code, message)
        self.reference = reference


class WebhookSignatureError(GatewayError):
    """A webhook that cannot be shown to come from the gateway: no or a bad signature, a
    timestamp too far from our clock, a body that cannot be read. Answer it with a 400 and
    change nothing."""


class GatewayConfigError(GatewayError):
    """A tenant's gateway credentials or settings are missing or malformed. `param` names the
    field; the message never repeats a credential's value."""

    def __init__(self, code: str, message: str, *, param: str | None = None):
        super().__init__(code, message)
        self.param = param


class PaymentGateway(Protocol):
    name: str

    async def tokenize(self, card: CardIn) -> TokenizedCard:
        """Verify the card and exchange it for a token; GatewayDecline if it is refused."""
        ...

    async def charge(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> ChargeResult:
        """Charge `amount` minor units. A decline is a failed result, not an exception.

        The same `idempotency_key` (the payment id) never charges twice. Raises
        GatewayRetriableError or GatewayOutcomeUnknown (see the module docstring).
        """
        ...

    async def refund(
        self, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        """Give back `amount` minor units (all or part) of the charge `reference`. The same
        `idempotency_key` (the refund id) never refunds twice."""
        ...

    async def lookup_charge(
        self, idempotency_key: str, *, token: str, amount: int, currency: str
    ) -> ChargeLookup:
        """What became of the charge sent with `idempotency_key` (and this token, amount and
        currency, exactly as sent). Raises GatewayRetriableError when the gateway cannot be
        asked now."""
        ...

    async def lookup_refund(
        self, idempotency_key: str, *, reference: str, amount: int, currency: str
    ) -> RefundLookup:
        """What became of the refund sent with `idempotency_key` (the refund id) of the charge
        `reference`, for `amount` in `currency`, exactly as sent. Raises GatewayRetriableError
        when the gateway cannot be asked now."""
        ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayWebhookEvent:
        """Verify a webhook by the gateway's own signature scheme and read it; raises
        WebhookSignatureError when it cannot be verified."""
        ...

    async def aclose(self) -> None:
        """Close the adapter's own HTTP connections (a shared session is left open)."""
        ...


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by name, whatever its case."""
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def read_settings(
    model: type[SettingsT], credentials: Mapping[str, Any], gateway: str
) -> SettingsT:
    """A tenant's credentials for `gateway`, checked by `model`; GatewayConfigError names the
    first bad field, with pydantic's message only (its errors would also echo the value)."""
    try:
        return model.model_validate(dict(credentials))
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        message = f"{gateway} {param or 'credentials'}: {first['msg']}"
        raise GatewayConfigError("invalid_credentials", message, param=param) from None


def never_sent(exc: BaseException | None) -> bool:
    """Whether a transport error happened before the request could leave: the connection was
    refused or not made in time. Anything later (a read timeout, a dropped connection) may
    have reached the gateway."""
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
