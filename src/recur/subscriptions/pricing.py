"""What a plan costs for one period: pure functions over plain values."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from recur.subscriptions.periods import Interval


@dataclass(frozen=True)
class PlanTerms:
    name: str
    amount: int
    pricing_model: str
    interval: Interval
    interval_count: int


@dataclass(frozen=True)
class Line:
    description: str
    unit_amount: int
    quantity: int
    period_start: datetime
    period_end: datetime

    @property
    def amount(self) -> int:
        return self.unit_amount * self.quantity


def describe_interval(interval: Interval, count: int) -> str:
    return f"every {count} {interval}s" if count > 1 else f"per {interval}"


def period_lines(
    terms: PlanTerms, quantity: int, period_start: datetime, period_end: datetime
) -> list[Line]:
    """The lines of one full period of a plan at `quantity`.

    `flat` charges the plan's amount whatever the quantity; `per_unit` charges amount x quantity.
    """
    label = f"{terms.name} ({describe_interval(terms.interval, terms.interval_count)})"
    if terms.pricing_model == "per_unit":
        return [Line(label, terms.amount, quantity, period_start, period_end)]
    if terms.pricing_model == "flat":
        return [Line(label, terms.amount, 1, period_start, period_end)]
    raise ValueError(f"unknown pricing model {terms.pricing_model!r}")
