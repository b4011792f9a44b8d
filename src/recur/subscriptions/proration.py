"""Proration: the share of a period's price for the time left in it. Pure functions."""

from __future__ import annotations

from datetime import datetime, timedelta

_TICK = timedelta(microseconds=1)


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
