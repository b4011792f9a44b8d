"""The `manual` gateway: bank transfers and cash, marked paid by an operator.

No money moves through Recur. A charge gives the customer a transfer reference to quote
(`RCR-XXXX-XXXX`, fixed by the payment's idempotency key) and the tenant's payment
instructions, and leaves the payment pending: `charge` raises GatewayOutcomeUnknown with code
`awaiting_operator` and that reference. Nothing settles it but an operator.

How an operator marks a payment paid (or gives up on it), as the payment service does it:

1. The operator finds the transfer on the bank statement (by its reference) or takes the cash,
   and tells Recur: the payment, paid or not, the bank's own reference, a note.
2. The service checks the payment is pending on the `manual` gateway, keeps the mark in its own
   table (the operator, the time from the clock, the reference), and settles the payment with
   `settlement(mark)`, a ChargeResult like any gateway's answer, with its ledger lines and event.
3. The service builds the adapter with `operator_marks`, a function reading those marks by
   idempotency key, so that `lookup_charge` (the reconciler's question) answers the truth:
   `unknown` until marked, then `succeeded` or `failed`.

Payment methods of this gateway are no cards: their tokens are `manual_bank_transfer` and
`manual_cash`; `tokenize` refuses every card. A refund is given back by the operator who asks
for it (cash back, or a transfer they make), so it succeeds at once; its reference is fixed by
the refund's idempotency key. The gateway sends no webhooks.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from recur.kit.clock import Clock
from recur.payments.gateways.base import (
    ChargeLookup,
    ChargeResult,
    ChargeStatus,
    GatewayDecline,
    GatewayOutcomeUnknown,
    GatewayWebhookEvent,
    RefundLookup,
    RefundResult,
    TokenizedCard,
    WebhookSignatureError,
    read_settings,
)
from recur.payments.schemas import CardIn

NAME = "manual"
TOKEN_BANK_TRANSFER = "manual_bank_transfer"  # noqa: S105 (a method's name, not a secret)
TOKEN_CASH = "manual_cash"  # noqa: S105
TOKENS = (TOKEN_BANK_TRANSFER, TOKEN_CASH)
# A customer's manual payment method, by its type (`POST .../payment-methods`), and back.
ManualMethod = Literal["bank_transfer", "cash"]
TOKEN_OF_METHOD: dict[str, str] = {
    "bank_transfer": TOKEN_BANK_TRANSFER,
    "cash": TOKEN_CASH,
}
METHOD_OF_TOKEN: dict[str, ManualMethod] = {
    TOKEN_BANK_TRANSFER: "bank_transfer",
    TOKEN_CASH: "cash",
}
AWAITING_OPERATOR = "awaiting_operator"


@dataclass(frozen=True)
class OperatorMark:
    """An operator's word on a manual payment."""

    idempotency_key: str
    paid: bool
    marked_by: str
    marked_at: datetime
    reference: str | None = None  # the bank's reference of the transfer, or a receipt number
    note: str | None = None


# Reads the mark of a payment by its idempotency key; None while nobody marked it.
MarkLookup = Callable[[str], Awaitable[OperatorMark | None]]


class ManualSettings(BaseModel):
    """A tenant's manual gateway settings: what its customers are told to do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    instructions: str = Field(
        default="Pay by bank transfer, quoting the reference.", min_length=1, max_length=2000
    )


def transfer_reference(idempotency_key: str) -> str:
    """The short reference a customer quotes on a transfer: `RCR-` and 8 base32 characters,
    always the same for one payment."""
    digest = hashlib.sha256(idempotency_key.encode()).digest()
    code = base64.b32encode(digest).decode()[:8]
    return f"RCR-{code[:4]}-{code[4:]}"


def refund_reference(idempotency_key: str) -> str:
    digest = hashlib.sha256(b"refund|" + idempotency_key.encode()).digest()
    return "RCRR-" + base64.b32encode(digest).decode()[:8]


def mark(
    idempotency_key: str,
    *,
    paid: bool,
    by: str,
    clock: Clock,
    reference: str | None = None,
    note: str | None = None,
) -> OperatorMark:
    """An operator's mark, timed by the clock."""
    return OperatorMark(idempotency_key, paid, by, clock.now(), reference, note)


def settlement(operator_mark: OperatorMark) -> ChargeResult:
    """The result to settle a manual payment with, once an operator marked it."""
    reference = operator_mark.reference or transfer_reference(operator_mark.idempotency_key)
    if operator_mark.paid:
        return ChargeResult(True, reference)
    return ChargeResult(
        False, reference, "not_received", "The payment was not received, the operator said."
    )


class ManualGateway:
    """Bank transfers and cash; see the module docstring."""

    name = NAME

    def __init__(
        self,
        clock: Clock,
        *,
        settings: ManualSettings | None = None,
        operator_marks: MarkLookup | None = None,
    ):
        self._clock = clock
        self.settings = settings or ManualSettings()
        self._marks = operator_marks

    @classmethod
    def from_credentials(
        cls, clock: Clock, credentials: Mapping[str, Any], operator_marks: MarkLookup | None
    ) -> ManualGateway:
        settings = read_settings(ManualSettings, credentials, NAME)
        return cls(clock, settings=settings, operator_marks=operator_marks)

    async def tokenize(self, card: CardIn) -> TokenizedCard:
        raise GatewayDecline(
            "card_not_supported", "The manual gateway takes bank transfers and cash, not cards."
        )

    async def charge(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> ChargeResult:
        if token not in TOKENS:
            return ChargeResult(
                False, None, "invalid_token", "The payment method is not a manual one."
            )
        reference = transfer_reference(idempotency_key)
        raise GatewayOutcomeUnknown(
            AWAITING_OPERATOR,
            f"awaiting the customer's payment, quoting {reference}: {self.settings.instructions}",
            reference=reference,
        )

    async def refund(
        self, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        return RefundResult(True, refund_reference(idempotency_key))

    async def lookup_charge(
        self, idempotency_key: str, *, token: str, amount: int, currency: str
    ) -> ChargeLookup:
        operator_mark = await self._marks(idempotency_key) if self._marks else None
        if operator_mark is None:
            return ChargeLookup(ChargeStatus.UNKNOWN, transfer_reference(idempotency_key))
        result = settlement(operator_mark)
        return ChargeLookup(
            ChargeStatus.SUCCEEDED if result.succeeded else ChargeStatus.FAILED,
            result.reference,
            result.failure_code,
            result.failure_message,
        )

    async def lookup_refund(
        self, idempotency_key: str, *, reference: str, amount: int, currency: str
    ) -> RefundLookup:
        # A refund by hand is done when it is asked for: there is nothing it could be waiting on.
        return RefundLookup(ChargeStatus.SUCCEEDED, refund_reference(idempotency_key))

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayWebhookEvent:
        raise WebhookSignatureError("no_webhooks", "the manual gateway sends no webhooks")

    async def aclose(self) -> None:
        """Nothing to close."""
