"""What a plan costs for one period: pure functions over plain values.

Pricing models:
- `flat`: the plan's amount, whatever the quantity;
- `per_unit`: amount x quantity;
- `tiered_graduated`: each unit at the price of the tier it falls in, plus the flat fee of every
  tier the quantity enters;
- `tiered_volume`: every unit at the price of the one tier the whole quantity falls in, plus that
  tier's flat fee;
- `package`: amount per started package of `package_size` units.

Tiers follow Stripe's: tier i holds units (previous up_to + 1) to up_to inclusive, the first
starts at unit 1 and the last has no up_to. A quantity of 0 enters no tier and costs 0 in every
model but `flat`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from recur.subscriptions.periods import Interval

TierMode = Literal["graduated", "volume"]

TIER_MODES: Mapping[str, TierMode] = {
    "tiered_graduated": "graduated",
    "tiered_volume": "volume",
}


@dataclass(frozen=True)
class PriceTier:
    up_to: int | None  # the last unit of the tier, inclusive; None for the last tier
    unit_amount: int
    flat_amount: int = 0


@dataclass(frozen=True)
class PlanTerms:
    name: str
    amount: int | None  # None for tiered plans: their tiers carry the prices
    pricing_model: str
    interval: Interval
    interval_count: int
    tiers: tuple[PriceTier, ...] | None = None
    package_size: int | None = None


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


class PricingError(ValueError):
    """A plan's pricing is not well formed; `param` names the offending field."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.message = message
        self.param = param


def terms_from_plan(plan: Any, product_name: str = "") -> PlanTerms:
    """The terms of a stored plan (a row of the plans table, tiers as stored JSON)."""
    tiers = None
    if plan.tiers is not None:
        tiers = tuple(
            PriceTier(t["up_to"], t["unit_amount"], t.get("flat_amount", 0)) for t in plan.tiers
        )
    return PlanTerms(
        name=plan.nickname or product_name,
        amount=plan.amount,
        pricing_model=plan.pricing_model,
        interval=plan.interval,
        interval_count=plan.interval_count,
        tiers=tiers,
        package_size=plan.package_size,
    )


# --- validation ----------------------------------------------------------------------------


def check_tiers(tiers: Sequence[PriceTier]) -> None:
    """Raise PricingError unless the tiers are well formed: at least one, `up_to` strictly
    increasing positive integers, only the last one unbounded, no negative price."""
    if not tiers:
        raise PricingError("at least one tier is needed", "tiers")
    last = len(tiers) - 1
    previous = 0
    for i, tier in enumerate(tiers):
        if tier.up_to is None:
            if i != last:
                raise PricingError("only the last tier may have no up_to", f"tiers.{i}.up_to")
        elif i == last:
            # Without an unbounded last tier some quantities would have no price.
            raise PricingError("the last tier's up_to must be null", f"tiers.{i}.up_to")
        elif tier.up_to <= previous:
            what = "the previous tier's" if i else "0"
            raise PricingError(f"up_to must be greater than {what}", f"tiers.{i}.up_to")
        else:
            previous = tier.up_to
        if tier.unit_amount < 0:
            raise PricingError("unit_amount cannot be negative", f"tiers.{i}.unit_amount")
        if tier.flat_amount < 0:
            raise PricingError("flat_amount cannot be negative", f"tiers.{i}.flat_amount")


def check_pricing(
    pricing_model: str,
    amount: int | None,
    tiers: Sequence[PriceTier] | None,
    package_size: int | None,
) -> None:
    """Raise PricingError unless the fields a plan prices with fit its pricing model."""
    if pricing_model in TIER_MODES:
        if amount is not None:
            # Refused rather than ignored: a price that is shown but never charged misleads.
            raise PricingError(f"{pricing_model} prices with its tiers, not amount", "amount")
        if tiers is None:
            raise PricingError(f"{pricing_model} needs tiers", "tiers")
        check_tiers(tiers)
    else:
        if amount is None:
            raise PricingError(f"{pricing_model} needs an amount", "amount")
        if amount < 0:
            raise PricingError("amount cannot be negative", "amount")
        if tiers is not None:
            raise PricingError("tiers are only for tiered_graduated and tiered_volume", "tiers")
    if pricing_model == "package":
        if package_size is None:
            raise PricingError("package needs a package_size", "package_size")
        if package_size < 1:
            raise PricingError("package_size must be at least 1", "package_size")
    elif package_size is not None:
        raise PricingError("package_size is only for package", "package_size")


# --- amounts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TierCharge:
    """What one tier charges: `units` at its unit price, plus its flat fee."""

    tier: PriceTier
    first: int  # the tier's first unit
    units: int

    @property
    def amount(self) -> int:
        return self.units * self.tier.unit_amount + self.tier.flat_amount


def _bounds(tiers: Sequence[PriceTier]) -> Iterator[tuple[int, PriceTier]]:
    first = 1
    for tier in tiers:
        yield first, tier
        if tier.up_to is None:
            return
        first = tier.up_to + 1


def _tier_charges(tiers: Sequence[PriceTier], quantity: int, mode: TierMode) -> list[_TierCharge]:
    if quantity < 0:
        raise ValueError("quantity cannot be negative")
    charges = []
    for first, tier in _bounds(tiers):
        if quantity < first:
            break
        if tier.up_to is not None and quantity > tier.up_to:
            if mode == "graduated":  # the tier is full and the walk goes on
                charges.append(_TierCharge(tier, first, tier.up_to - first + 1))
            continue
        # The tier the quantity ends in: graduated takes its share, volume takes everything.
        units = quantity - first + 1 if mode == "graduated" else quantity
        charges.append(_TierCharge(tier, first, units))
        return charges
    if quantity > 0:
        raise ValueError("the tiers do not reach the quantity: the last needs up_to None")
    return charges


def tiered_amount(tiers: Sequence[PriceTier], quantity: int, mode: TierMode) -> int:
    """What `quantity` units cost under `tiers`, graduated or volume (see the module doc)."""
    return sum(charge.amount for charge in _tier_charges(tiers, quantity, mode))


def package_count(package_size: int, quantity: int) -> int:
    """How many packages `quantity` units start: 11 units in packages of 10 are 2."""
    if package_size < 1:
        raise ValueError("package_size must be at least 1")
    if quantity < 0:
        raise ValueError("quantity cannot be negative")
    return -(-quantity // package_size)


def package_amount(amount: int, package_size: int, quantity: int) -> int:
    """`amount` per started package of `package_size` units."""
    return amount * package_count(package_size, quantity)


def period_amount(terms: PlanTerms, quantity: int) -> int:
    """What one full period of the plan costs at `quantity`: the sum of its `period_lines`."""
    if quantity < 0:
        raise ValueError("quantity cannot be negative")
    if terms.pricing_model in TIER_MODES:
        assert terms.tiers is not None
        return tiered_amount(terms.tiers, quantity, TIER_MODES[terms.pricing_model])
    assert terms.amount is not None
    if terms.pricing_model == "flat":
        return terms.amount
    if terms.pricing_model == "per_unit":
        return terms.amount * quantity
    if terms.pricing_model == "package":
        assert terms.package_size is not None
        return package_amount(terms.amount, terms.package_size, quantity)
    raise ValueError(f"unknown pricing model {terms.pricing_model!r}")


# --- order lines ---------------------------------------------------------------------------


def describe_interval(interval: Interval, count: int) -> str:
    return f"every {count} {interval}s" if count > 1 else f"per {interval}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _units(first: int, last: int | None) -> str:
    if last is None:
        return f"{first}+ units"
    return f"unit {first}" if first == last else f"{first}-{last} units"


def period_lines(
    terms: PlanTerms, quantity: int, period_start: datetime, period_end: datetime
) -> list[Line]:
    """The lines of one full period of a plan at `quantity`; they add up to `period_amount`.

    Graduated tiers give a line per tier entered ("Pro, 11-15 units") and a line for each of
    those tiers' flat fees; volume tiers one line for all units at the price of their tier, and
    its flat fee; package one line of packages, each at the plan's amount.
    """
    if quantity < 0:
        raise ValueError("quantity cannot be negative")
    every = describe_interval(terms.interval, terms.interval_count)

    def line(detail: str, unit_amount: int, count: int) -> Line:
        return Line(f"{terms.name}{detail} ({every})", unit_amount, count, period_start, period_end)

    if terms.pricing_model in TIER_MODES:
        assert terms.tiers is not None
        mode = TIER_MODES[terms.pricing_model]
        lines = []
        for charge in _tier_charges(terms.tiers, quantity, mode):
            tier = charge.tier
            span = _units(charge.first, tier.up_to)
            if mode == "graduated":
                used = _units(charge.first, charge.first + charge.units - 1)
                lines.append(line(f", {used}", tier.unit_amount, charge.units))
            else:
                units = _count(quantity, "unit")
                lines.append(line(f", {units} at the {span} price", tier.unit_amount, quantity))
            if tier.flat_amount:
                lines.append(line(f", {span} flat fee", tier.flat_amount, 1))
        return lines
    assert terms.amount is not None
    if terms.pricing_model == "per_unit":
        return [line("", terms.amount, quantity)]
    if terms.pricing_model == "flat":
        return [line("", terms.amount, 1)]
    if terms.pricing_model == "package":
        assert terms.package_size is not None
        packages = package_count(terms.package_size, quantity)
        detail = f", {_count(quantity, 'unit')} in packages of {terms.package_size}"
        return [line(detail, terms.amount, packages)]
    raise ValueError(f"unknown pricing model {terms.pricing_model!r}")
