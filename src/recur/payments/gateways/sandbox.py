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
"""

from __future__ import annotations

import hashlib
import secrets

from recur.kit.clock import Clock
from recur.payments.gateways.base import (
    ChargeResult,
    GatewayDecline,
    RefundResult,
    TokenizedCard,
)
from recur.payments.schemas import CardIn

NAME = "sandbox"
TOKEN_PREFIX = "tok_sandbox_"  # noqa: S105 (a prefix, not a secret)
CHARGE_PREFIX = "ch_sandbox_"
REFUND_PREFIX = "re_sandbox_"

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


class SandboxGateway:
    """The test gateway every installation has; see the module docstring for its cards."""

    name = NAME

    def __init__(self, clock: Clock):
        self._clock = clock

    async def tokenize(self, card: CardIn) -> TokenizedCard:
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
        outcome = token.removeprefix(TOKEN_PREFIX).partition("_")[0]
        if not token.startswith(TOKEN_PREFIX) or outcome not in (CHARGE_OK, CHARGE_DECLINED):
            return ChargeResult(False, None, "invalid_token", MESSAGES["invalid_token"])
        reference = _reference(CHARGE_PREFIX, idempotency_key)
        if outcome == CHARGE_DECLINED:
            return ChargeResult(False, reference, "card_declined", MESSAGES["card_declined"])
        return ChargeResult(True, reference)

    async def refund(
        self, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        if not reference.startswith(CHARGE_PREFIX):
            return RefundResult(False, None, "invalid_charge", MESSAGES["invalid_charge"])
        return RefundResult(True, _reference(REFUND_PREFIX, idempotency_key))
