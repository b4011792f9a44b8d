"""Proration: the share of a period's price for the time left in it. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction

from recur.kit.money import round_minor

_TICK = timedelta(microseconds=1)
# Enough significant digits for a 19-digit amount times a percentage to round exactly once.
_PRECISION = 60


def unused_amount(amount: int, period_start: datetime, period_end: datetime, at: datetime) -> int:
    """The part of `amount` (paid for [period_start, period_end)) for the time after `at`.

    Proportional to the exact time left, to the microsecond, and rounded once, half up, to the
    currency's minor unit. Computed in integers: amount x microseconds left / microseconds in
    the period is exact before its one rounding, whatever the size of the amount.
    """
    if amount < 0:
        raise ValueError("amount must not be negative")
    if period_end <= period_start:
        raise ValueError("a period must end after it starts")
    if at <= period_start:
        return amount
    if at >= period_end:
        return 0
    left = (period_end - at) // _TICK
    total = (period_end - period_start) // _TICK
    return (2 * amount * left + total) // (2 * total)


# --- plan and quantity changes -------------------------------------------------------------


def round_exact(value: Fraction) -> int:
    """Round an exact, non-negative amount of minor units to an int, half up: the one rounding
    of a prorated line."""
    if value < 0:
        raise ValueError("value must not be negative")
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


@dataclass(frozen=True)
class PeriodOrder:
    """What the order of a subscription's current period charged, and what of it was settled
    (paid by card or from the customer's credit balance)."""

    subtotal: int
    discount: int
    total: int
    settled: int


def paid_basis(price: int, order: PeriodOrder, *, discounted_again: bool) -> Fraction:
    """What the customer paid, before tax, for a whole period at `price` (the period's own
    lines, before discount), as an exact amount: the basis the credit for unused time is
    prorated from.

    Scaled by the share of the order that was settled (nothing is credited for unpaid time),
    and by what its discount left of the subtotal, unless the order the credit lands on takes
    the same percentage off again (`discounted_again`), which would discount it twice. An order
    whose subtotal was taken to 0 by earlier credits was paid by them in full.
    """
    if price < 0:
        raise ValueError("price must not be negative")
    if order.total > 0:
        share = Fraction(min(max(order.settled, 0), order.total), order.total)
    else:
        share = Fraction(1)  # an order of 0 is paid the moment it is finalized
    if not discounted_again and order.subtotal > 0:
        share *= Fraction(order.subtotal - min(order.discount, order.subtotal), order.subtotal)
    return price * share


def unused_share(basis: Fraction | int, start: datetime, end: datetime, at: datetime) -> int:
    """The part of `basis` (paid for [start, end)) for the time after `at`, rounded once, half
    up, to the minor unit: `unused_amount` for an exact, possibly fractional, basis."""
    basis = Fraction(basis)
    if basis < 0:
        raise ValueError("basis must not be negative")
    if end <= start:
        raise ValueError("a period must end after it starts")
    if at <= start:
        return round_exact(basis)
    if at >= end:
        return 0
    return round_exact(basis * ((end - at) // _TICK) / ((end - start) // _TICK))


@dataclass(frozen=True)
class ChangeProration:
    """The two lines of a change at `at`: the credit for the unused time of what was paid
    (zero or negative) and the charge for the rest of the period at the new price (zero or
    positive). Each is rounded once."""

    credit: int
    charge: int

    @property
    def net(self) -> int:
        return self.credit + self.charge


def prorate_change(
    basis: Fraction | int,
    basis_start: datetime,
    new_price: int,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
) -> ChangeProration:
    """Prorate a change at `at` within [period_start, period_end).

    `basis` is what was paid for the current price from `basis_start` (the period's start, or
    the moment of an earlier change in the period) to the period's end; `new_price` is a whole
    period at the new plan and quantity. A change and its reverse at the same instant cancel
    out: the reverse's credit is exactly the first one's charge.
    """
    if new_price < 0:
        raise ValueError("new_price must not be negative")
    if not period_start <= basis_start < period_end:
        raise ValueError("the basis must start within the period")
    return ChangeProration(
        credit=-unused_share(basis, basis_start, period_end, at),
        charge=unused_share(new_price, period_start, period_end, at),
    )


def credit_value(
    credit: int, percent_off: Decimal | None, exclusive_rates: Sequence[Decimal]
) -> int:
    """What a net credit (before discount and tax) is worth to the customer, as the order it
    came from would have counted it: less its percentage discount, plus each exclusive tax,
    each rounded once, half up. Inclusive taxes are in the amounts already."""
    if credit < 0:
        raise ValueError("credit must not be negative")
    with localcontext(prec=_PRECISION):
        off = 0 if percent_off is None else round_minor(Decimal(credit) * percent_off / 100)
        taxable = credit - min(off, credit)
        return taxable + sum(round_minor(Decimal(taxable) * rate / 100) for rate in exclusive_rates)
