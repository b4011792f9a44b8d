"""The one source of time. All time in Recur is UTC and timezone-aware."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    """Wall-clock time in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that moves only when told to; used by tests."""

    def __init__(self, at: datetime):
        self._at = ensure_utc(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = ensure_utc(at)


def ensure_utc(moment: datetime) -> datetime:
    """Return `moment` in UTC; a naive datetime is a programming error, not an assumption."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: Recur only handles timezone-aware UTC time")
    return moment.astimezone(UTC)
