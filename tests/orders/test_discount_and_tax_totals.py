"""Discounts and tax in the pure totals computation: properties, and the issue's examples."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from recur.orders.totals import (
    DiscountInput,
    LineInput,
    TaxRateInput,
    Totals,
    compute_totals,
    discount_amount,
    tax_amounts,
)

lines = st.lists(
    st.builds(LineInput, st.integers(0, 10**12), st.integers(0, 10**3)), min_size=1, max_size=10
)
# Percentages as the catalog allows them: coupons to 2 decimals, tax rates to 4.
percent_off = st.integers(1, 100_00).map(lambda hundredths: Decimal(hundredths) / 100)
tax_percentage = st.integers(0, 100_0000).map(lambda n: Decimal(n) / 10_000)
discounts = (
    st.none()
    | st.builds(DiscountInput, percent_off=percent_off)
    | st.builds(DiscountInput, amount_off=st.integers(0, 10**16))
)
tax_rates = st.lists(st.builds(TaxRateInput, tax_percentage, st.booleans()), max_size=4)


def half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half-up, in integers only: the oracle."""
    return (2 * numerator + denominator) // (2 * denominator)


def totals_of(amount: int, discount: DiscountInput | None = None, *rates: TaxRateInput) -> Totals:
    return compute_totals([LineInput(amount, 1)], discount, rates)


@given(lines, discounts, tax_rates)
def test_the_totals_add_up_and_nothing_is_negative(given_lines, discount, rates) -> None:
    totals = compute_totals(given_lines, discount, rates)
    exclusive = sum(t for t, r in zip(totals.tax_amounts, rates, strict=True) if not r.inclusive)
    assert totals.subtotal == sum(li.unit_amount * li.quantity for li in given_lines)
    assert totals.subtotal - totals.discount + exclusive == totals.total
    assert 0 <= totals.discount <= totals.subtotal
    assert all(t >= 0 for t in totals.tax_amounts)
    assert totals.tax == sum(totals.tax_amounts)
    assert totals.total >= 0
    assert 0 <= totals.total_excluding_tax <= totals.total
    assert len(totals.tax_amounts) == len(rates)


@given(st.integers(0, 2**62), percent_off)
def test_a_percentage_discount_is_rounded_once_half_up(subtotal, percent) -> None:
    hundredths = int(percent * 100)
    assert discount_amount(subtotal, DiscountInput(percent_off=percent)) == half_up(
        subtotal * hundredths, 100_00
    )


@given(st.integers(0, 10**15), st.integers(0, 10**16))
def test_an_amount_discount_never_exceeds_the_subtotal(subtotal, amount_off) -> None:
    assert discount_amount(subtotal, DiscountInput(amount_off=amount_off)) == min(
        subtotal, amount_off
    )


@given(st.integers(0, 2**62), tax_percentage)
def test_one_rate_rounds_half_up_exactly(taxable, percentage) -> None:
    n = int(percentage * 10_000)  # ten-thousandths of a percent
    assert tax_amounts(taxable, [TaxRateInput(percentage, False)]) == (
        half_up(taxable * n, 100 * 10_000),
    )
    # Inclusive: the part of the amount that is tax, taxable x rate / (100 + rate).
    assert tax_amounts(taxable, [TaxRateInput(percentage, True)]) == (
        half_up(taxable * n, 100 * 10_000 + n),
    )


@given(st.integers(0, 10**15), st.lists(tax_percentage, min_size=1, max_size=6))
def test_inclusive_tax_never_exceeds_the_amount(taxable, percentages) -> None:
    taxes = tax_amounts(taxable, [TaxRateInput(p, True) for p in percentages])
    assert sum(taxes) <= taxable


def test_the_issues_examples() -> None:
    vat = TaxRateInput(Decimal(20), inclusive=False)
    exclusive = totals_of(1000, None, vat)
    assert (exclusive.tax, exclusive.total, exclusive.total_excluding_tax) == (200, 1200, 1000)
    inclusive = totals_of(1000, None, TaxRateInput(Decimal(20), inclusive=True))
    assert (inclusive.tax, inclusive.total, inclusive.total_excluding_tax) == (167, 1000, 833)


def test_discount_comes_before_tax() -> None:
    vat = TaxRateInput(Decimal(20), inclusive=False)
    totals = totals_of(1000, DiscountInput(percent_off=Decimal(10)), vat)
    assert (totals.discount, totals.tax, totals.total) == (100, 180, 1080)
    # An amount off larger than the subtotal takes it to zero, and leaves nothing to tax.
    totals = totals_of(300, DiscountInput(amount_off=500), vat)
    assert (totals.discount, totals.tax, totals.total) == (300, 0, 0)


def test_halves_round_up() -> None:
    assert totals_of(5, DiscountInput(percent_off=Decimal(10))).discount == 1  # 0.5
    assert totals_of(15, DiscountInput(percent_off=Decimal(10))).discount == 2  # 1.5
    assert totals_of(25, None, TaxRateInput(Decimal(10), False)).tax == 3  # 2.5
    assert totals_of(24, None, TaxRateInput(Decimal(10), False)).tax == 2  # 2.4
    # 1.05 inclusive of 5%: 0.05 of tax, to the cent.
    assert totals_of(105, None, TaxRateInput(Decimal(5), True)).tax == 5


def test_several_rates_each_on_the_discounted_amount() -> None:
    state = TaxRateInput(Decimal("7.25"), False)
    city = TaxRateInput(Decimal("1.5"), False)
    totals = totals_of(10_000, DiscountInput(amount_off=1_000), state, city)
    assert totals.tax_amounts == (653, 135)  # 652.5 and 135 of 9000
    assert totals.total == 9000 + 653 + 135
    # Two inclusive rates share the amount: 1100 holding 5% + 5% is 1000 net, 50 + 50 tax.
    five = TaxRateInput(Decimal(5), True)
    both = totals_of(1100, None, five, five)
    assert (both.tax_amounts, both.total, both.total_excluding_tax) == ((50, 50), 1100, 1000)


def test_zero_subtotal_has_no_discount_or_tax() -> None:
    totals = totals_of(0, DiscountInput(percent_off=Decimal(50)), TaxRateInput(Decimal(20), False))
    assert (totals.discount, totals.tax, totals.total) == (0, 0, 0)
