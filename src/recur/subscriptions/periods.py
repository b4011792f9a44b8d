"""Billing period arithmetic: pure functions over timezone-aware UTC datetimes.

A subscription's periods are numbered from its billing cycle anchor (period 0 starts at the
anchor). Every boundary is computed directly from the anchor and the period index, never by
stepping from the previous boundary: stepping monthly from Jan 31 would go Feb 28 -> Mar 28
and lose the anchor day for good, while computing from the anchor gives Feb 28 -> Mar 31.

Months and years follow calendar arithmetic: the anchor's day of month is kept and clamped
to the last day of shorter months (Jan 31 -> Feb 28/29 -> Mar 31 -> Apr 30), and the time of
day is preserved. Days and weeks are fixed 24-hour steps, which in UTC is the same thing.

Any aware datetime is accepted and converted to UTC; results are always UTC. Naive datetimes
are rejected: guessing a timezone would move period boundaries.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

__all__ = ["Interval", "period_boundary", "period_containing", "trial_end"]

Interval = Literal["day", "week", "month", "year"]

_INTERVALS: frozenset[str] = frozenset(get_args(Interval))
_DAYS_PER_STEP = {"day": 1, "week": 7}
_MONTHS_PER_STEP = {"month": 1, "year": 12}


def period_boundary(
    anchor: datetime, interval: Interval, interval_count: int, index: int
) -> datetime:
    """Return the start of period ``index`` (0 -> ``anchor``) of a billing cycle.

    Each period lasts ``interval_count`` intervals. For months and years the anchor's day of
    month is clamped to the target month (monthly from Jan 31: Feb 28, Mar 31, Apr 30).
    Raises ValueError on bad arguments and OverflowError past year 9999.
    """
    anchor = _utc(anchor, "anchor")
    _check_interval(interval, interval_count)
    if not _is_int(index) or index < 0:
        raise ValueError(f"index must be an int >= 0, got {index!r}")
    return _boundary(anchor, interval, interval_count, index)


def period_containing(
    anchor: datetime, interval: Interval, interval_count: int, moment: datetime
) -> tuple[int, datetime, datetime]:
    """Return ``(index, start, end)`` of the period with ``start <= moment < end``.

    ``moment`` must not be before ``anchor``. The index is computed arithmetically rather
    than by walking periods from the anchor, so this is O(1) however old the subscription.
    """
    anchor = _utc(anchor, "anchor")
    moment = _utc(moment, "moment")
    _check_interval(interval, interval_count)
    if moment < anchor:
        raise ValueError(f"moment {moment.isoformat()} is before anchor {anchor.isoformat()}")

    if interval in _DAYS_PER_STEP:
        # Fixed-length periods: exact integer division of timedeltas (microsecond precision).
        step = timedelta(days=_DAYS_PER_STEP[interval] * interval_count)
        index = (moment - anchor) // step
    else:
        # Calendar periods: boundary i lies in the month anchor.month + i * step, so flooring
        # the month distance gives either the right index or one too many (when moment is in
        # the boundary's month but before its clamped day / time of day). Fixed up below.
        step_months = _MONTHS_PER_STEP[interval] * interval_count
        months = (moment.year - anchor.year) * 12 + (moment.month - anchor.month)
        index = months // step_months

    # Belt and braces: the estimate is off by at most one, but verify both edges so the
    # invariant start <= moment < end holds by construction.
    start = _boundary(anchor, interval, interval_count, index)
    while start > moment:
        index -= 1
        start = _boundary(anchor, interval, interval_count, index)
    end = _boundary(anchor, interval, interval_count, index + 1)
    while end <= moment:
        index += 1
        start, end = end, _boundary(anchor, interval, interval_count, index + 1)
    return index, start, end


def trial_end(start: datetime, trial_days: int) -> datetime:
    """Return when a trial of ``trial_days`` days starting at ``start`` ends (exclusive)."""
    start = _utc(start, "start")
    if not _is_int(trial_days) or trial_days < 0:
        raise ValueError(f"trial_days must be an int >= 0, got {trial_days!r}")
    return start + timedelta(days=trial_days)


def _boundary(anchor: datetime, interval: str, interval_count: int, index: int) -> datetime:
    """period_boundary() without argument checks; ``anchor`` must already be UTC."""
    if interval in _DAYS_PER_STEP:
        return anchor + timedelta(days=_DAYS_PER_STEP[interval] * interval_count * index)
    # Zero-based month number since year 0, so divmod handles the year carry.
    total = anchor.month - 1 + _MONTHS_PER_STEP[interval] * interval_count * index
    year, month0 = divmod(total, 12)
    year += anchor.year
    if year > datetime.max.year:
        raise OverflowError("period boundary is past year 9999")
    month = month0 + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def _check_interval(interval: str, interval_count: int) -> None:
    if interval not in _INTERVALS:
        raise ValueError(f"unknown interval {interval!r}; expected one of {sorted(_INTERVALS)}")
    if not _is_int(interval_count) or interval_count < 1:
        raise ValueError(f"interval_count must be an int >= 1, got {interval_count!r}")


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True periods is always a bug.
    return isinstance(value, int) and not isinstance(value, bool)


def _utc(moment: datetime, name: str) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} is a naive datetime; Recur only handles aware UTC time")
    return moment.astimezone(UTC)
