"""Tests for recur.subscriptions.pricing: what a plan costs at a quantity, and its lines."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from fractions import Fraction
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recur.subscriptions.pricing import (
    PlanTerms,
    PriceTier,
    PricingError,
    TierMode,
    check_pricing,
    check_tiers,
    package_amount,
    period_amount,
    period_lines,
    terms_from_plan,
    tiered_amount,
)

START = datetime(2025, 1, 1, tzinfo=UTC)
END = datetime(2025, 2, 1, tzinfo=UTC)
MODES: tuple[TierMode, ...] = ("graduated", "volume")
EXAMPLE = (PriceTier(10, 500), PriceTier(None, 400))

prices = st.integers(min_value=0, max_value=10_000) | st.integers(min_value=0, max_value=2**63 - 1)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[PriceTier, ...]:
    bounds = draw(st.lists(st.integers(1, 300), max_size=6, unique=True).map(sorted))
    up_tos: list[int | None] = [*bounds, None]
    return tuple(
        PriceTier(up_to, draw(prices), draw(st.sampled_from([0, 0, 1, 250]) | prices))
        for up_to in up_tos
    )


def tier_of_unit(tiers: tuple[PriceTier, ...], unit: int) -> int:
    """The index of the tier that holds `unit` (1-based), found the slow, obvious way."""
    for i, tier in enumerate(tiers):
        if tier.up_to is None or unit <= tier.up_to:
            return i
    raise AssertionError("the last tier is unbounded")


def graduated_by_walking(tiers: tuple[PriceTier, ...], quantity: int) -> int:
    """Each unit, one by one, at the price of its tier; each tier entered adds its flat fee."""
    total = 0
    entered: set[int] = set()
    for unit in range(1, quantity + 1):
        i = tier_of_unit(tiers, unit)
        total += tiers[i].unit_amount
        entered.add(i)
    return total + sum(tiers[i].flat_amount for i in entered)


def interesting_quantities(tiers: tuple[PriceTier, ...]) -> set[int]:
    """0, 1, and every quantity at and around each tier's bound."""
    around = {b + d for t in tiers if (b := t.up_to) is not None for d in (-1, 0, 1)}
    return {q for q in around | {0, 1} if q >= 0}


def tiered_terms(tiers: tuple[PriceTier, ...], model: str) -> PlanTerms:
    return PlanTerms("Pro", None, model, "month", 1, tiers=tiers)


# --- the example ------------------------------------------------------------------


def test_the_example_costs_7000_graduated_and_6000_volume() -> None:
    assert tiered_amount(EXAMPLE, 15, "graduated") == 10 * 500 + 5 * 400 == 7000
    assert tiered_amount(EXAMPLE, 15, "volume") == 15 * 400 == 6000


def test_the_example_as_lines() -> None:
    graduated = period_lines(tiered_terms(EXAMPLE, "tiered_graduated"), 15, START, END)
    assert [(line.description, line.quantity, line.unit_amount) for line in graduated] == [
        ("Pro, 1-10 units (per month)", 10, 500),
        ("Pro, 11-15 units (per month)", 5, 400),
    ]
    volume = period_lines(tiered_terms(EXAMPLE, "tiered_volume"), 15, START, END)
    assert [(line.description, line.quantity, line.unit_amount) for line in volume] == [
        ("Pro, 15 units at the 11+ units price (per month)", 15, 400)
    ]
    assert all((line.period_start, line.period_end) == (START, END) for line in graduated)


def test_flat_fees_come_once_per_tier_reached() -> None:
    tiers = (PriceTier(5, 100, flat_amount=1000), PriceTier(None, 50, flat_amount=300))
    assert tiered_amount(tiers, 3, "graduated") == 3 * 100 + 1000
    assert tiered_amount(tiers, 8, "graduated") == 5 * 100 + 1000 + 3 * 50 + 300
    assert tiered_amount(tiers, 3, "volume") == 3 * 100 + 1000
    assert tiered_amount(tiers, 8, "volume") == 8 * 50 + 300
    lines = period_lines(tiered_terms(tiers, "tiered_graduated"), 8, START, END)
    assert [(line.description, line.quantity, line.unit_amount) for line in lines] == [
        ("Pro, 1-5 units (per month)", 5, 100),
        ("Pro, 1-5 units flat fee (per month)", 1, 1000),
        ("Pro, 6-8 units (per month)", 3, 50),
        ("Pro, 6+ units flat fee (per month)", 1, 300),
    ]
    lines = period_lines(tiered_terms(tiers, "tiered_volume"), 8, START, END)
    assert [(line.description, line.quantity, line.unit_amount) for line in lines] == [
        ("Pro, 8 units at the 6+ units price (per month)", 8, 50),
        ("Pro, 6+ units flat fee (per month)", 1, 300),
    ]


def test_packages_are_started_packages() -> None:
    assert package_amount(700, 10, 0) == 0
    assert package_amount(700, 10, 1) == 700
    assert package_amount(700, 10, 10) == 700
    assert package_amount(700, 10, 11) == 1400
    terms = PlanTerms("Seats", 700, "package", "year", 1, package_size=10)
    [line] = period_lines(terms, 11, START, END)
    assert (line.description, line.quantity, line.unit_amount) == (
        "Seats, 11 units in packages of 10 (per year)",
        2,
        700,
    )


def test_a_quantity_of_zero_costs_nothing_but_a_flat_plan() -> None:
    tiers = (PriceTier(5, 100, flat_amount=1000), PriceTier(None, 50, flat_amount=300))
    for model in ("tiered_graduated", "tiered_volume"):
        assert period_amount(tiered_terms(tiers, model), 0) == 0
        assert period_lines(tiered_terms(tiers, model), 0, START, END) == []
    assert period_amount(PlanTerms("P", 900, "per_unit", "month", 1), 0) == 0
    assert period_amount(PlanTerms("P", 900, "package", "month", 1, package_size=3), 0) == 0
    assert period_amount(PlanTerms("P", 900, "flat", "month", 1), 0) == 900


def test_a_negative_quantity_is_refused() -> None:
    for mode in MODES:
        with pytest.raises(ValueError):
            tiered_amount(EXAMPLE, -1, mode)
    with pytest.raises(ValueError):
        package_amount(100, 10, -1)
    with pytest.raises(ValueError):
        period_lines(PlanTerms("P", 1, "per_unit", "month", 1), -1, START, END)


# --- properties ---------------------------------------------------------------------------


@given(tier_lists(), st.data())
def test_tiers_sum_correctly_at_every_boundary(tiers: tuple[PriceTier, ...], data) -> None:
    for quantity in interesting_quantities(tiers) | {data.draw(st.integers(0, 400))}:
        assert tiered_amount(tiers, quantity, "graduated") == graduated_by_walking(tiers, quantity)
        volume = tiered_amount(tiers, quantity, "volume")
        if quantity == 0:
            assert volume == 0
        else:
            tier = tiers[tier_of_unit(tiers, quantity)]
            assert volume == quantity * tier.unit_amount + tier.flat_amount


@given(tier_lists(), st.integers(0, 400))
def test_one_more_unit_costs_its_tiers_price_and_the_tiers_flat_fee_on_entry(
    tiers: tuple[PriceTier, ...], quantity: int
) -> None:
    unit = quantity + 1
    tier = tiers[tier_of_unit(tiers, unit)]
    enters = unit == 1 or tier_of_unit(tiers, quantity) != tier_of_unit(tiers, unit)
    step = tiered_amount(tiers, unit, "graduated") - tiered_amount(tiers, quantity, "graduated")
    assert step == tier.unit_amount + (tier.flat_amount if enters else 0)
    assert step >= 0  # so graduated never goes down as the quantity grows


@given(tier_lists(), st.integers(1, 400))
def test_one_unbounded_tier_is_per_unit_plus_its_fee(tiers, quantity: int) -> None:
    only = (PriceTier(None, tiers[0].unit_amount, tiers[0].flat_amount),)
    for mode in MODES:
        assert tiered_amount(only, quantity, mode) == (
            quantity * only[0].unit_amount + only[0].flat_amount
        )


@given(st.integers(0, 2**31), st.integers(1, 10_000), prices)
def test_package_is_started_packages_times_amount(quantity: int, size: int, amount: int) -> None:
    assert package_amount(amount, size, quantity) == math.ceil(Fraction(quantity, size)) * amount


@st.composite
def plan_terms(draw: st.DrawFn) -> PlanTerms:
    model = draw(
        st.sampled_from(["flat", "per_unit", "package", "tiered_graduated", "tiered_volume"])
    )
    interval = draw(st.sampled_from(["day", "week", "month", "year"]))
    count = draw(st.integers(1, 12))
    if model.startswith("tiered"):
        return PlanTerms("Pro", None, model, interval, count, tiers=draw(tier_lists()))
    size = draw(st.integers(1, 50)) if model == "package" else None
    return PlanTerms("Pro", draw(prices), model, interval, count, package_size=size)


@given(plan_terms(), st.integers(0, 400))
def test_lines_sum_to_the_amount_and_nothing_is_negative(terms: PlanTerms, quantity: int) -> None:
    lines = period_lines(terms, quantity, START, END)
    amount = period_amount(terms, quantity)
    assert sum(line.amount for line in lines) == amount >= 0
    for line in lines:
        assert line.unit_amount >= 0 and line.quantity >= 0 and line.amount >= 0
        assert line.description.startswith("Pro")
        assert (line.period_start, line.period_end) == (START, END)
    if terms.pricing_model == "tiered_graduated":
        unit_lines = [line for line in lines if "flat fee" not in line.description]
        assert sum(line.quantity for line in unit_lines) == quantity
    if terms.pricing_model in ("tiered_volume", "package", "per_unit", "flat") and quantity:
        assert len([line for line in lines if "flat fee" not in line.description]) == 1


# --- validation ---------------------------------------------------------------------------


@given(tier_lists())
def test_well_formed_tiers_pass(tiers: tuple[PriceTier, ...]) -> None:
    check_tiers(tiers)
    check_pricing("tiered_graduated", None, tiers, None)
    check_pricing("tiered_volume", None, tiers, None)


def refusal(tiers: list[PriceTier]) -> str:
    with pytest.raises(PricingError) as caught:
        check_tiers(tiers)
    return caught.value.param


def test_bad_tiers_name_the_offending_field() -> None:
    assert refusal([]) == "tiers"
    assert refusal([PriceTier(10, 1)]) == "tiers.0.up_to"  # last must be unbounded
    assert refusal([PriceTier(None, 1), PriceTier(None, 1)]) == "tiers.0.up_to"
    assert refusal([PriceTier(10, 1), PriceTier(10, 1), PriceTier(None, 1)]) == "tiers.1.up_to"
    assert refusal([PriceTier(10, 1), PriceTier(5, 1), PriceTier(None, 1)]) == "tiers.1.up_to"
    assert refusal([PriceTier(0, 1), PriceTier(None, 1)]) == "tiers.0.up_to"
    assert refusal([PriceTier(5, 1), PriceTier(None, -1)]) == "tiers.1.unit_amount"
    assert refusal([PriceTier(None, 1, flat_amount=-1)]) == "tiers.0.flat_amount"


@pytest.mark.parametrize(
    ("model", "amount", "tiers", "package_size", "param"),
    [
        ("tiered_graduated", None, None, None, "tiers"),
        ("tiered_volume", None, None, None, "tiers"),
        ("tiered_volume", 100, EXAMPLE, None, "amount"),
        ("tiered_graduated", None, EXAMPLE, 10, "package_size"),
        ("flat", 100, EXAMPLE, None, "tiers"),
        ("per_unit", 100, [], None, "tiers"),
        ("flat", None, None, None, "amount"),
        ("per_unit", None, None, None, "amount"),
        ("package", None, None, 10, "amount"),
        ("package", 100, None, None, "package_size"),
        ("package", 100, None, 0, "package_size"),
        ("per_unit", 100, None, 10, "package_size"),
    ],
)
def test_pricing_fields_must_fit_the_model(model, amount, tiers, package_size, param) -> None:
    with pytest.raises(PricingError) as caught:
        check_pricing(model, amount, tiers, package_size)
    assert caught.value.param == param


def test_terms_from_a_stored_plan() -> None:
    row = SimpleNamespace(
        nickname=None,
        amount=None,
        pricing_model="tiered_volume",
        interval="month",
        interval_count=1,
        tiers=[
            {"up_to": 10, "unit_amount": 500, "flat_amount": 0},
            {"up_to": None, "unit_amount": 400},
        ],
        package_size=None,
    )
    terms = terms_from_plan(row, "Pro")
    assert terms == PlanTerms("Pro", None, "tiered_volume", "month", 1, tiers=EXAMPLE)
    assert period_amount(terms, 15) == 6000
    named = terms_from_plan(SimpleNamespace(**{**vars(row), "nickname": "Team"}), "Pro")
    assert named.name == "Team"
