"""The one interface every payment gateway adapter implements.

Payments talks to a gateway only through `PaymentGateway`, so adding Stripe, Adyen or a manual
gateway, and routing between them, adds adapters without touching the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from recur.payments.schemas import CardIn


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
    succeeded: bool
    reference: str | None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True)
class RefundResult:
    succeeded: bool
    reference: str | None
    failure_code: str | None = None
    failure_message: str | None = None


class GatewayDecline(Exception):
    """The gateway refused the card. `message` is safe to show: it never contains the number."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class PaymentGateway(Protocol):
    name: str

    async def tokenize(self, card: CardIn) -> TokenizedCard:
        """Verify the card and exchange it for a token; GatewayDecline if it is refused."""
        ...

    async def charge(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> ChargeResult:
        """Charge `amount` minor units. A decline is a failed result, not an exception.

        The same `idempotency_key` (the payment id) never charges twice.
        """
        ...

    async def refund(
        self, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        """Give back `amount` minor units of the charge `reference`."""
        ...
