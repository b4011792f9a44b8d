"""What an order adds up to: pure functions over plain values, no database.

The steps, in order:
1. subtotal = the sum of the lines (unit amount x quantity);
2. the discount comes off the subtotal: a percentage rounded once, half-up, or a fixed amount,
   never more than the subtotal;
3. tax is computed on what is left (the taxable amount), per rate, each rounded once, half-up:
   an exclusive rate adds round(taxable x rate / 100) to the total; inclusive rates are already
   in the prices, so each one's tax is the part of the taxable amount that is tax,
   round(taxable x rate / (100 + sum of inclusive rates)), and adds nothing.

So total = subtotal - discount + exclusive tax, and total excluding tax = total - all tax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

from recur.kit.errors import InvalidRequest
from recur.kit.money import MAX_MINOR, round_minor

# Enough significant digits for a 19-digit amount times a percentage, divided, to keep every
# digit that decides a half-up rounding (Decimal's default 28 could round before we do).
_PRECISION = 60
_HUNDRED = Decimal(100)


@dataclass(frozen=True)
class LineInput:
    unit_amount: int
    quantity: int


@dataclass(frozen=True)
class DiscountInput:
    """A coupon's terms: exactly one of percent_off (0 < p <= 100) and amount_off (>= 0)."""

    percent_off: Decimal | None = None
    amount_off: int | None = None


@dataclass(frozen=True)
class TaxRateInput:
    percentage: Decimal  # 0 to 100
    inclusive: bool


@dataclass(frozen=True)
class Totals:
    line_amounts: tuple[int, ...]
    subtotal: int
    total: int
    discount: int = 0
    tax_amounts: tuple[int, ...] = ()  # one per tax rate, in their order
    tax: int = 0  # all of tax_amounts, inclusive and exclusive

    @property
    def total_excluding_tax(self) -> int:
        return self.total - self.tax


def _check_minor(value: int, param: str, what: str) -> int:
    # Amounts live in BIGINT columns: past that they could not be stored, let alone paid.
    if abs(value) > MAX_MINOR:
        raise InvalidRequest(f"{what} is larger than {MAX_MINOR}", param=param)
    return value


def discount_amount(subtotal: int, discount: DiscountInput | None) -> int:
    """What the discount takes off `subtotal`: between 0 and the subtotal."""
    if discount is None or subtotal <= 0:
        return 0
    if discount.percent_off is not None:
        with localcontext(prec=_PRECISION):
            amount = round_minor(Decimal(subtotal) * discount.percent_off / _HUNDRED)
    else:
        amount = discount.amount_off or 0
    return max(0, min(amount, subtotal))


def tax_amounts(taxable: int, tax_rates: Sequence[TaxRateInput]) -> tuple[int, ...]:
    """The tax at each rate on `taxable` (an amount after discount), in the rates' order."""
    if taxable <= 0:
        return tuple(0 for _ in tax_rates)
    inclusive_sum = sum((r.percentage for r in tax_rates if r.inclusive), Decimal(0))
    amounts = []
    with localcontext(prec=_PRECISION):
        for rate in tax_rates:
            divisor = _HUNDRED + inclusive_sum if rate.inclusive else _HUNDRED
            amounts.append(round_minor(Decimal(taxable) * rate.percentage / divisor))
    return tuple(amounts)


def compute_totals(
    lines: Sequence[LineInput],
    discount: DiscountInput | None = None,
    tax_rates: Sequence[TaxRateInput] = (),
) -> Totals:
    """Each line's amount (unit amount x quantity), the subtotal, the discount, the tax at each
    rate and the total.

    Raises InvalidRequest (param naming the line) when any amount leaves the 64-bit range, and
    when the subtotal is negative: credit lines may lower it, never below zero.
    """
    amounts = []
    for i, line in enumerate(lines):
        _check_minor(line.unit_amount, f"lines.{i}.unit_amount", "unit_amount")
        if line.quantity < 0:
            raise InvalidRequest("quantity cannot be negative", param=f"lines.{i}.quantity")
        amounts.append(
            _check_minor(line.unit_amount * line.quantity, f"lines.{i}", "the line's amount")
        )
    subtotal = _check_minor(sum(amounts), "lines", "the subtotal")
    if subtotal < 0:
        raise InvalidRequest("an order's total cannot be negative", param="lines")
    off = discount_amount(subtotal, discount)
    taxable = subtotal - off
    taxes = tax_amounts(taxable, tax_rates)
    exclusive = sum(t for t, rate in zip(taxes, tax_rates, strict=True) if not rate.inclusive)
    total = _check_minor(taxable + exclusive, "lines", "the total")
    return Totals(
        line_amounts=tuple(amounts),
        subtotal=subtotal,
        total=total,
        discount=off,
        tax_amounts=taxes,
        tax=sum(taxes),
    )
