"""Money helpers: integer minor units plus an ISO 4217 currency code.

Recur never stores money as floats or Decimals: an amount is an ``int`` count of the
currency's minor unit (cents for USD, yen for JPY, fils for KWD) next to its upper-case
ISO 4217 code. Decimals appear only at the edges (API input, invoices), and converting
between the two is exact: anything that cannot be represented exactly is an error, never
silently rounded. The single place where rounding is allowed is :func:`round_minor`.

Currency data (codes and minor-unit exponents) comes from the ``iso4217`` package.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from functools import cache

import iso4217

__all__ = [
    "MAX_MINOR",
    "AmountError",
    "CurrencyError",
    "exponent",
    "format_amount",
    "normalize_currency",
    "round_minor",
    "to_major",
    "to_minor",
]

# Minor-unit amounts are stored in signed 64-bit integer columns (BIGINT), so anything
# larger cannot be persisted. Checking here also stops absurd inputs such as
# Decimal("1E+999999999") from building gigantic Python ints.
MAX_MINOR = 2**63 - 1

# Plain decimal notation only for strings: Decimal() would also accept "1e3", "1_000",
# surrounding whitespace and non-ASCII digits, none of which belong in a money field.
_AMOUNT_RE = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_CODE_RE = re.compile(r"[A-Za-z]{3}")


class CurrencyError(ValueError):
    """The currency code is not an ISO 4217 currency Recur can bill in."""


class AmountError(ValueError):
    """The amount is not a finite number representable in the currency's minor unit."""


def normalize_currency(code: str) -> str:
    """Return the upper-case ISO 4217 code for ``code`` ("usd" -> "USD").

    Codes without a minor unit (precious metals, funds, XXX/XTS) are rejected: an amount
    in them cannot be stored as an integer count of minor units.
    """
    if not isinstance(code, str) or not _CODE_RE.fullmatch(code):
        raise CurrencyError(f"not a three-letter currency code: {code!r}")
    upper = code.upper()
    try:
        currency = iso4217.Currency(upper)
    except ValueError:
        raise CurrencyError(f"unknown ISO 4217 currency: {code!r}") from None
    if currency.exponent is None:
        raise CurrencyError(f"currency has no minor unit: {upper}")
    return upper


@cache
def exponent(currency: str) -> int:
    """Return the number of minor-unit digits of ``currency`` (JPY 0, USD 2, KWD 3)."""
    exp: int | None = iso4217.Currency(normalize_currency(currency)).exponent
    assert exp is not None  # normalize_currency rejects currencies without a minor unit
    return exp


def to_minor(amount: Decimal | str, currency: str) -> int:
    """Convert a major-unit amount to integer minor units: Decimal("12.34") USD -> 1234.

    Exact or an error: "12.345" USD raises :class:`AmountError` rather than being rounded,
    because a silently rounded price is a billing bug. Trailing zeros are fine
    ("12.340" USD -> 1234). Strings must be plain decimal notation ("-12.34").
    """
    exp = exponent(currency)
    value = _parse_amount(amount)
    if value.is_zero():
        return 0
    # Magnitude check before building any integer: adjusted() is the power of ten of the
    # leading digit, so past this the result is >= 10**19 > MAX_MINOR. It also bounds the
    # digits kept below to 19, so Decimal("1E+999999999") cannot allocate a gigantic int.
    if value.adjusted() + exp > 18:
        raise AmountError(f"amount too large: {amount!r}")
    sign, digits, value_exp = value.as_tuple()
    assert isinstance(value_exp, int)  # finite, checked by _parse_amount
    # Work on the digit tuple, not Decimal.scaleb(): the Decimal context would round to 28
    # significant digits, and dropping digits needs an exactness check anyway.
    shift = value_exp + exp  # power of ten of the last digit, in minor units
    if shift >= 0:
        kept, zeros = digits, shift
    else:
        cut = len(digits) + shift
        if any(digits[max(cut, 0) :]):
            raise AmountError(
                f"{amount!r} has more than {exp} decimal places allowed for {currency.upper()}"
            )
        kept, zeros = digits[:cut], 0
    minor: int = int("".join(map(str, kept)) or "0") * 10**zeros
    if minor > MAX_MINOR:
        raise AmountError(f"amount too large: {amount!r}")
    return -minor if sign else minor


def to_major(amount_minor: int, currency: str) -> Decimal:
    """Convert integer minor units to an exact major-unit Decimal: 1234 USD -> Decimal("12.34").

    The result always carries exactly the currency's number of decimal places (100 USD ->
    Decimal("1.00")), so ``str()`` of it is ready for display.
    """
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount_minor must be an int, got {type(amount_minor).__name__}")
    exp = exponent(currency)
    # Build from the tuple rather than scaleb() so no context precision/rounding applies.
    sign, digits, _ = Decimal(amount_minor).as_tuple()
    return Decimal((sign, digits, -exp))


def format_amount(amount_minor: int, currency: str) -> str:
    """Format minor units for invoices: "12.34 USD", "500 JPY", "-1.000 KWD"."""
    return f"{to_major(amount_minor, currency):f} {normalize_currency(currency)}"


def round_minor(value: Decimal) -> int:
    """Round a Decimal already in minor units to an int: the one explicit rounding step.

    Billing computations (proration, percentage discounts, tax) work in Decimal minor units
    and call this exactly once at the end, so rounding never compounds.
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"value must be a Decimal, got {type(value).__name__}")
    if not value.is_finite():
        raise AmountError(f"cannot round a non-finite amount: {value}")
    # ROUND_HALF_UP is commercial rounding, as Stripe does: halves go away from zero, so
    # 2.5 -> 3 and -2.5 -> -3 (refunds mirror charges). Not banker's rounding (HALF_EVEN).
    # to_integral_value() is exact for any size; quantize() would hit context precision.
    return int(value.to_integral_value(rounding=ROUND_HALF_UP))


def _parse_amount(amount: Decimal | str) -> Decimal:
    """Turn API/user input into a finite Decimal, or raise AmountError."""
    if isinstance(amount, str):
        if not _AMOUNT_RE.fullmatch(amount):
            raise AmountError(f"not a decimal amount: {amount!r}")
        value = Decimal(amount)
    elif isinstance(amount, Decimal):
        value = amount
    else:
        # Floats in particular: 0.1 + 0.2 is not 0.3, so they never get near money.
        raise AmountError(f"amount must be a Decimal or str, got {type(amount).__name__}")
    if not value.is_finite():
        raise AmountError(f"amount must be finite: {amount!r}")
    return value
