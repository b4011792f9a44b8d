"""Tests for recur.subscriptions.periods: calendar-correct billing period boundaries."""

from __future__ import annotations

import calendar
import itertools
from datetime import UTC, datetime, timedelta, timezone
from typing import get_args
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recur.subscriptions.periods import (
    Interval,
    period_boundary,
    period_containing,
    trial_end,
)

INTERVALS: tuple[Interval, ...] = get_args(Interval)
ONE_US = timedelta(microseconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def boundaries(anchor: datetime, interval: Interval, count: int, n: int) -> list[datetime]:
    return [period_boundary(anchor, interval, count, i) for i in range(n)]


# --- examples -----------------------------------------------------------------------------


def test_monthly_from_jan_31_keeps_the_anchor_day() -> None:
    anchor = utc(2025, 1, 31, 9, 30)
    assert boundaries(anchor, "month", 1, 7) == [
        utc(2025, 1, 31, 9, 30),
        utc(2025, 2, 28, 9, 30),
        utc(2025, 3, 31, 9, 30),  # back to the 31st, not stuck on the 28th
        utc(2025, 4, 30, 9, 30),
        utc(2025, 5, 31, 9, 30),
        utc(2025, 6, 30, 9, 30),
        utc(2025, 7, 31, 9, 30),
    ]


def test_monthly_across_a_year_end() -> None:
    anchor = utc(2024, 11, 30)
    assert boundaries(anchor, "month", 1, 5) == [
        utc(2024, 11, 30),
        utc(2024, 12, 30),
        utc(2025, 1, 30),
        utc(2025, 2, 28),
        utc(2025, 3, 30),
    ]


def test_monthly_in_a_leap_year_uses_feb_29() -> None:
    anchor = utc(2024, 1, 31)
    assert period_boundary(anchor, "month", 1, 1) == utc(2024, 2, 29)
    assert period_boundary(anchor, "month", 1, 2) == utc(2024, 3, 31)
    assert period_boundary(utc(2024, 1, 30), "month", 1, 1) == utc(2024, 2, 29)
    assert period_boundary(utc(2024, 1, 29), "month", 1, 1) == utc(2024, 2, 29)
    assert period_boundary(utc(2024, 1, 28), "month", 1, 1) == utc(2024, 2, 28)


def test_century_leap_rules() -> None:
    # 2100 is not a leap year, 2000 was.
    assert period_boundary(utc(2099, 1, 31), "month", 1, 13) == utc(2100, 2, 28)
    assert period_boundary(utc(1999, 12, 31), "month", 1, 2) == utc(2000, 2, 29)


def test_yearly_from_feb_29() -> None:
    anchor = utc(2024, 2, 29, 12)
    assert boundaries(anchor, "year", 1, 6) == [
        utc(2024, 2, 29, 12),
        utc(2025, 2, 28, 12),
        utc(2026, 2, 28, 12),
        utc(2027, 2, 28, 12),
        utc(2028, 2, 29, 12),  # the anchor day comes back in the next leap year
        utc(2029, 2, 28, 12),
    ]
    assert period_boundary(anchor, "year", 4, 1) == utc(2028, 2, 29, 12)


def test_every_three_months() -> None:
    anchor = utc(2025, 11, 30, 23, 59, 59, 999999)
    assert boundaries(anchor, "month", 3, 5) == [
        utc(2025, 11, 30, 23, 59, 59, 999999),
        utc(2026, 2, 28, 23, 59, 59, 999999),
        utc(2026, 5, 30, 23, 59, 59, 999999),
        utc(2026, 8, 30, 23, 59, 59, 999999),
        utc(2026, 11, 30, 23, 59, 59, 999999),
    ]


def test_weekly() -> None:
    anchor = utc(2025, 2, 24, 8)
    assert boundaries(anchor, "week", 1, 3) == [
        utc(2025, 2, 24, 8),
        utc(2025, 3, 3, 8),
        utc(2025, 3, 10, 8),
    ]
    assert period_boundary(anchor, "week", 2, 2) == utc(2025, 3, 24, 8)


def test_daily() -> None:
    anchor = utc(2024, 2, 28, 1, 2, 3)
    assert boundaries(anchor, "day", 1, 3) == [
        utc(2024, 2, 28, 1, 2, 3),
        utc(2024, 2, 29, 1, 2, 3),
        utc(2024, 3, 1, 1, 2, 3),
    ]
    assert period_boundary(anchor, "day", 30, 12) == anchor + timedelta(days=360)


def test_period_containing_examples() -> None:
    anchor = utc(2025, 1, 31, 9, 30)
    feb = utc(2025, 2, 28, 9, 30)
    mar = utc(2025, 3, 31, 9, 30)
    assert period_containing(anchor, "month", 1, anchor) == (0, anchor, feb)
    assert period_containing(anchor, "month", 1, feb - ONE_US) == (0, anchor, feb)
    assert period_containing(anchor, "month", 1, feb) == (1, feb, mar)
    # Mar 15 is in the March month but before the Mar 31 boundary: the estimate overshoots.
    assert period_containing(anchor, "month", 1, utc(2025, 3, 15)) == (1, feb, mar)
    assert period_containing(anchor, "month", 1, utc(2025, 3, 31, 9, 29)) == (1, feb, mar)
    assert period_containing(anchor, "month", 1, mar)[0] == 2
    assert period_containing(anchor, "year", 1, utc(2026, 1, 31, 9, 29)) == (
        0,
        anchor,
        utc(2026, 1, 31, 9, 30),
    )
    assert period_containing(anchor, "week", 1, utc(2025, 2, 14, 9, 30)) == (
        2,
        utc(2025, 2, 14, 9, 30),
        utc(2025, 2, 21, 9, 30),
    )


def test_period_containing_is_fast_for_old_subscriptions() -> None:
    # Daily for ~8000 years: walking from index 0 would take millions of steps.
    anchor = utc(1970, 1, 1)
    index, start, end = period_containing(anchor, "day", 1, utc(9999, 12, 30, 12))
    assert start == utc(9999, 12, 30)
    assert end == utc(9999, 12, 31)
    assert index == (start - anchor).days


def test_trial_end() -> None:
    start = utc(2025, 1, 31, 10)
    assert trial_end(start, 14) == utc(2025, 2, 14, 10)
    assert trial_end(start, 0) == start
    assert trial_end(utc(2024, 2, 28), 1) == utc(2024, 2, 29)


def test_other_timezones_are_converted_to_utc() -> None:
    # 2025-01-31 23:30 in Paris is 22:30 UTC on the same day.
    paris = datetime(2025, 1, 31, 23, 30, tzinfo=ZoneInfo("Europe/Paris"))
    result = period_boundary(paris, "month", 1, 1)
    assert result == utc(2025, 2, 28, 22, 30)
    assert result.tzinfo is UTC
    plus_two = datetime(2025, 1, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert period_boundary(plus_two, "day", 1, 1) == utc(2025, 1, 1, 23)
    assert trial_end(plus_two, 1).tzinfo is UTC


# --- argument checks ----------------------------------------------------------------------


def test_naive_datetimes_are_rejected() -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(ValueError, match="naive"):
        period_boundary(naive, "month", 1, 0)
    with pytest.raises(ValueError, match="naive"):
        period_containing(utc(2025, 1, 1), "month", 1, naive)
    with pytest.raises(ValueError, match="naive"):
        period_containing(naive, "month", 1, utc(2025, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        trial_end(naive, 14)


@pytest.mark.parametrize("count", [0, -1, True, 1.0])
def test_bad_interval_count_is_rejected(count: object) -> None:
    with pytest.raises(ValueError, match="interval_count"):
        period_boundary(utc(2025, 1, 1), "month", count, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval_count"):
        period_containing(utc(2025, 1, 1), "month", count, utc(2025, 1, 1))  # type: ignore[arg-type]


@pytest.mark.parametrize("index", [-1, 1.0, False])
def test_bad_index_is_rejected(index: object) -> None:
    with pytest.raises(ValueError, match="index"):
        period_boundary(utc(2025, 1, 1), "month", 1, index)  # type: ignore[arg-type]


@pytest.mark.parametrize("interval", ["months", "Month", "quarter", "", "hour"])
def test_unknown_interval_is_rejected(interval: str) -> None:
    with pytest.raises(ValueError, match="interval"):
        period_boundary(utc(2025, 1, 1), interval, 1, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        period_containing(utc(2025, 1, 1), interval, 1, utc(2025, 1, 1))  # type: ignore[arg-type]


def test_moment_before_anchor_is_rejected() -> None:
    with pytest.raises(ValueError, match="before anchor"):
        period_containing(utc(2025, 1, 1), "month", 1, utc(2025, 1, 1) - ONE_US)


@pytest.mark.parametrize("days", [-1, 1.5, None])
def test_bad_trial_days_are_rejected(days: object) -> None:
    with pytest.raises(ValueError, match="trial_days"):
        trial_end(utc(2025, 1, 1), days)  # type: ignore[arg-type]


def test_overflow_past_year_9999() -> None:
    with pytest.raises(OverflowError):
        period_boundary(utc(9999, 12, 1), "month", 1, 1)
    with pytest.raises(OverflowError):
        period_boundary(utc(2025, 1, 1), "day", 1, 10**7)


# --- properties ---------------------------------------------------------------------------


@st.composite
def anchors(draw: st.DrawFn) -> datetime:
    """UTC anchors in 1970..2100, with month ends (28th-31st) drawn often."""
    year = draw(st.integers(min_value=1970, max_value=2100))
    month = draw(st.integers(min_value=1, max_value=12))
    last = calendar.monthrange(year, month)[1]
    day = draw(st.integers(min_value=1, max_value=last) | st.integers(min_value=28, max_value=last))
    hour = draw(st.integers(min_value=0, max_value=23))
    minute = draw(st.integers(min_value=0, max_value=59))
    second = draw(st.integers(min_value=0, max_value=59))
    microsecond = draw(st.sampled_from([0, 999_999]) | st.integers(0, 999_999))
    return utc(year, month, day, hour, minute, second, microsecond)


intervals = st.sampled_from(INTERVALS)
counts = st.integers(min_value=1, max_value=12)
# 12-year periods * 40 from 2100 stays well before year 9999.
period_counts = st.integers(min_value=1, max_value=40)


@given(anchors(), intervals, counts, period_counts)
def test_boundaries_strictly_increase(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    bounds = boundaries(anchor, interval, count, n + 1)
    assert bounds[0] == anchor
    assert all(a < b for a, b in itertools.pairwise(bounds))
    assert all(b.tzinfo is UTC for b in bounds)


@given(anchors(), st.sampled_from(["month", "year"]), counts, st.integers(0, 200))
def test_calendar_boundaries_clamp_the_anchor_day(
    anchor: datetime, interval: Interval, count: int, index: int
) -> None:
    boundary = period_boundary(anchor, interval, count, index)
    months = index * count * (12 if interval == "year" else 1)
    expected_year, expected_month0 = divmod(anchor.month - 1 + months, 12)
    assert (boundary.year, boundary.month) == (anchor.year + expected_year, expected_month0 + 1)
    days_in_month = calendar.monthrange(boundary.year, boundary.month)[1]
    assert boundary.day == min(anchor.day, days_in_month)
    assert boundary.timetz() == anchor.timetz()


@given(anchors(), st.sampled_from(["day", "week"]), counts, st.integers(0, 2000))
def test_fixed_boundaries_are_whole_steps(
    anchor: datetime, interval: Interval, count: int, index: int
) -> None:
    step = timedelta(days=count * (7 if interval == "week" else 1))
    assert period_boundary(anchor, interval, count, index) == anchor + index * step


@given(anchors(), intervals, counts, period_counts)
def test_n_periods_contain_exactly_n_boundaries(
    anchor: datetime, interval: Interval, count: int, n: int
) -> None:
    bounds = boundaries(anchor, interval, count, n + 1)
    for i in range(n):
        # First and last instant of period i both map to period i...
        assert period_containing(anchor, interval, count, bounds[i]) == (
            i,
            bounds[i],
            bounds[i + 1],
        )
        last_instant = bounds[i + 1] - ONE_US
        assert period_containing(anchor, interval, count, last_instant)[0] == i
    # ...so scanning [anchor, bounds[n]) sees exactly the indices 0..n-1.
    seen = {period_containing(anchor, interval, count, b)[0] for b in bounds[:n]}
    seen |= {period_containing(anchor, interval, count, b - ONE_US)[0] for b in bounds[1:]}
    assert seen == set(range(n))
    assert period_containing(anchor, interval, count, bounds[n])[0] == n


@given(
    anchors(),
    intervals,
    counts,
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365 * 300)),
)
def test_period_containing_brackets_the_moment(
    anchor: datetime, interval: Interval, count: int, offset: timedelta
) -> None:
    moment = anchor + offset
    index, start, end = period_containing(anchor, interval, count, moment)
    assert start <= moment < end
    assert start == period_boundary(anchor, interval, count, index)
    assert end == period_boundary(anchor, interval, count, index + 1)


@given(
    anchors(),
    intervals,
    st.integers(min_value=1, max_value=3),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=800)),
)
def test_period_containing_matches_a_naive_walk(
    anchor: datetime, interval: Interval, count: int, offset: timedelta
) -> None:
    # Reference implementation: count the boundaries after the anchor that have passed.
    moment = anchor + offset
    index = 0
    while period_boundary(anchor, interval, count, index + 1) <= moment:
        index += 1
    assert period_containing(anchor, interval, count, moment)[0] == index


@given(anchors(), st.integers(min_value=0, max_value=3650))
def test_trial_end_adds_whole_days(start: datetime, days: int) -> None:
    end = trial_end(start, days)
    assert end - start == timedelta(days=days)
    assert end.timetz() == start.timetz()
