"""A circuit breaker: closed while calls succeed, open after a run of failures (calls are not
made), half-open after a cool-down (one trial call decides). The API gateway keeps one per
upstream instance, payments one per (tenant, payment gateway)."""

from __future__ import annotations

from dataclasses import dataclass

CLOSED, HALF_OPEN, OPEN = "closed", "half-open", "open"


@dataclass
class Breaker:
    """One circuit breaker; times are the caller's monotonic seconds."""

    failures_to_open: int
    cool_down: float
    failures: int = 0
    opened_at: float | None = None
    trial_started: float | None = None

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return CLOSED
        return HALF_OPEN if now - self.opened_at >= self.cool_down else OPEN

    def admits(self, now: float) -> bool:
        """Whether a request may go now; in half-open, this takes the one trial."""
        state = self.state(now)
        if state == CLOSED:
            return True
        if state == OPEN:
            return False
        # One trial at a time; a trial that never reported back (its client went away)
        # frees the slot after another cool-down.
        if self.trial_started is not None and now - self.trial_started < self.cool_down:
            return False
        self.trial_started = now
        return True

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.trial_started = 0, None, None

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.opened_at is not None or self.failures >= self.failures_to_open:
            self.opened_at, self.trial_started = now, None
