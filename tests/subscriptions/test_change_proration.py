"""The math of plan and quantity changes: pure functions, checked with Hypothesis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from recur.orders.totals import DiscountInput, LineInput, TaxRateInput, compute_totals
from recur.subscriptions.changes import PendingItem, order_item_lines
from recur.subscriptions.pricing import Line
from recur.subscriptions.proration import (
    PeriodOrder,
    credit_value,
    paid_basis,
    prorate_change,
    unused_share,
)

START = datetime(2025, 1, 1, tzinfo=UTC)
prices = st.integers(min_value=0, max_value=10**15)


@st.composite
def instants(draw: st.DrawFn) -> tuple[datetime, datetime, datetime]:
    """A period of up to 400 days, to the microsecond, and an instant within it."""
    length = draw(st.integers(min_value=1, max_value=400 * 86400 * 10**6))
    offset = draw(st.integers(min_value=0, max_value=length - 1))
    end = START + timedelta(microseconds=length)
    return START, end, START + timedelta(microseconds=offset)


def _exact(amount: Fraction | int, start: datetime, end: datetime, at: datetime) -> Fraction:
    return Fraction(amount) * Fraction(
        (end - at) // timedelta.resolution, (end - start) // timedelta.resolution
    )


@given(period=instants(), price_a=prices, price_b=prices)
def test_a_change_and_its_reverse_at_the_same_instant_cancel_out(period, price_a, price_b) -> None:
    start, end, at = period
    there = prorate_change(price_a, start, price_b, start, end, at)
    back = prorate_change(there.charge, at, price_a, start, end, at)
    lines = [there.credit, there.charge, back.credit, back.charge]
    # What the first change charged is exactly what the second credits, and with a period paid
    # in full the credit of the first and the charge of the second are the same rounding.
    assert back.credit == -there.charge
    assert sum(lines) == 0
    assert abs(sum(lines)) <= len(lines)


@given(period=instants(), prices=st.lists(prices, min_size=2, max_size=6))
def test_a_chain_of_changes_at_one_instant_back_to_the_start_nets_to_nothing(
    period, prices
) -> None:
    start, end, at = period
    lines, basis, basis_from = [], Fraction(prices[0]), start
    for new_price in [*prices[1:], prices[0]]:
        change = prorate_change(basis, basis_from, new_price, start, end, at)
        lines += [change.credit, change.charge]
        basis, basis_from = Fraction(change.charge), at
    assert abs(sum(lines)) <= len(lines)


@given(
    period=instants(),
    price=prices,
    new_price=prices,
    paid=st.fractions(min_value=0, max_value=1, max_denominator=10**6),
)
def test_each_line_is_rounded_once_and_has_its_sign(period, price, new_price, paid) -> None:
    start, end, at = period
    basis = price * paid
    change = prorate_change(basis, start, new_price, start, end, at)
    assert change.credit <= 0 <= change.charge
    assert -change.credit <= basis + Fraction(1, 2)
    assert change.charge <= new_price
    # Within half a minor unit of the exact share: one rounding, not two.
    assert abs(-change.credit - _exact(basis, start, end, at)) <= Fraction(1, 2)
    assert abs(change.charge - _exact(new_price, start, end, at)) <= Fraction(1, 2)


@given(period=instants(), amount=prices)
@example(period=(START, START + 2 * timedelta.resolution, START + timedelta.resolution), amount=1)
def test_unused_share_of_a_whole_amount_is_rounded_half_up(period, amount) -> None:
    start, end, at = period
    exact = _exact(amount, start, end, at)
    share = unused_share(amount, start, end, at)
    assert share - Fraction(1, 2) <= exact < share + Fraction(1, 2)
    assert unused_share(amount, start, end, start) == amount
    assert unused_share(amount, start, end, end) == 0


@given(
    period=instants(),
    price=prices,
    new_price=prices,
    later=st.integers(min_value=0, max_value=10**18),
)
def test_a_change_then_a_cancel_settles_the_time_used_and_no_more(
    period, price, new_price, later
) -> None:
    # A period paid in full at `price`, changed to `new_price` at `at`, canceled with
    # proration at `end_at`: the change's lines and the cancel's credit, on the basis the
    # change left (what it charged, from `at`).
    start, end, at = period
    end_at = at + timedelta(microseconds=later % ((end - at) // timedelta.resolution))
    change = prorate_change(price, start, new_price, start, end, at)
    cancel_credit = -unused_share(change.charge, at, end, end_at)
    net = change.credit + change.charge + cancel_credit
    # The new price for the time used after the change, less the old one's for all the time
    # after it: within the three roundings of the exact amount.
    exact = _exact(new_price, start, end, at) - _exact(new_price, start, end, end_at)
    assert abs(net - (exact - _exact(price, start, end, at))) <= Fraction(3, 2)
    # Never more credit than was paid for the time after the change, and a cancel at the
    # change's instant credits exactly what a cancel alone would.
    assert net >= change.credit
    if end_at == at:
        assert net == -unused_share(price, start, end, at)


@given(
    price=prices,
    prorations=st.integers(min_value=-(10**15), max_value=10**15),
    percent=st.integers(min_value=0, max_value=100),
)
def test_prorations_on_the_period_order_are_not_paid_for_the_period(
    price, prorations, percent
) -> None:
    # A renewal order carrying an earlier period's prorations (taken to 0 at most, the rest
    # moved to the balance), paid in full: the basis for the period is its price, after the
    # order's percentage discount unless the credit's order takes it again.
    subtotal = max(price + prorations, 0)
    discount = subtotal * percent // 100
    order = PeriodOrder(subtotal=subtotal, discount=discount, total=subtotal - discount, settled=0)
    paid = PeriodOrder(order.subtotal, order.discount, order.total, settled=order.total)
    assert paid_basis(price, paid, discounted_again=True) == price
    if subtotal:
        assert paid_basis(price, paid, discounted_again=False) == price * Fraction(
            subtotal - discount, subtotal
        )
    else:
        assert paid_basis(price, paid, discounted_again=False) == price
    if order.total:
        assert paid_basis(price, order, discounted_again=True) == 0


@st.composite
def period_orders(draw: st.DrawFn) -> PeriodOrder:
    subtotal = draw(st.integers(min_value=0, max_value=10**12))
    discount = draw(st.integers(min_value=0, max_value=subtotal))
    total = draw(st.integers(min_value=0, max_value=2 * (subtotal - discount)))
    settled = draw(st.integers(min_value=0, max_value=total))
    return PeriodOrder(subtotal=subtotal, discount=discount, total=total, settled=settled)


@given(price=prices, order=period_orders(), again=st.booleans())
def test_the_paid_basis_is_never_more_than_the_price_nor_negative(price, order, again) -> None:
    basis = paid_basis(price, order, discounted_again=again)
    assert 0 <= basis <= price
    if order.total > 0 and order.settled == 0:
        assert basis == 0  # nothing paid, nothing credited
    if order.settled == order.total and (again or order.discount == 0):
        assert basis == price


def test_the_paid_basis_follows_the_discount_and_what_was_settled() -> None:
    half_off = PeriodOrder(subtotal=3000, discount=1500, total=1500, settled=1500)
    assert paid_basis(3000, half_off, discounted_again=False) == 1500
    assert paid_basis(3000, half_off, discounted_again=True) == 3000
    free = PeriodOrder(subtotal=3000, discount=3000, total=0, settled=0)
    assert paid_basis(3000, free, discounted_again=False) == 0
    half_paid = PeriodOrder(subtotal=3000, discount=0, total=3600, settled=1800)
    assert paid_basis(3000, half_paid, discounted_again=False) == 1500
    # Paid in full by earlier credits: an order of 0 whose lines net to 0.
    covered = PeriodOrder(subtotal=0, discount=0, total=0, settled=0)
    assert paid_basis(3000, covered, discounted_again=False) == 3000


@given(
    credit=prices,
    percent=st.none() | st.decimals(min_value=0, max_value=100, places=2),
    rates=st.lists(st.decimals(min_value=0, max_value=100, places=4), max_size=3),
)
def test_a_credit_is_worth_what_an_order_would_count(credit, percent, rates) -> None:
    worth = credit_value(credit, percent, rates)
    assert worth >= 0
    # The same as an order of that amount would total, discount and exclusive tax included.
    order = compute_totals(
        [LineInput(credit, 1)],
        None if percent is None or percent == 0 else DiscountInput(percent_off=percent),
        [TaxRateInput(rate, inclusive=False) for rate in rates],
    )
    assert worth == order.total


def test_a_credit_is_refused_below_zero() -> None:
    with pytest.raises(ValueError):
        credit_value(-1, None, [])
    with pytest.raises(ValueError):
        prorate_change(100, START, -1, START, START + timedelta(days=1), START)


def _line(amount: int) -> Line:
    return Line("Pro", amount, 1, START, START + timedelta(days=30))


@given(
    own=st.lists(st.integers(min_value=0, max_value=10**12), max_size=3),
    items=st.lists(st.integers(min_value=-(10**12), max_value=10**12), max_size=6),
    percent=st.none() | st.decimals(min_value=1, max_value=100, places=2),
    amount_off=st.none() | st.integers(min_value=0, max_value=10**6),
    rates=st.lists(
        st.tuples(st.decimals(min_value=0, max_value=50, places=2), st.booleans()), max_size=2
    ),
)
def test_items_never_take_an_order_below_zero(own, items, percent, amount_off, rates) -> None:
    lines = [_line(amount) for amount in own]
    pending = [
        PendingItem(f"ii_{i}", "Unused time", amount, START, START + timedelta(days=1))
        for i, amount in enumerate(items)
    ]
    drafts, carried = order_item_lines(lines, pending)
    net = sum(own) + sum(items)
    assert carried == max(-net, 0)
    # Signed lines as made, in their order, then at most one line carrying the excess.
    assert [d.unit_amount for d in drafts[: len(items)]] == items
    assert len(drafts) == len(items) + (1 if carried else 0)
    discount = None
    if percent is not None:
        discount = DiscountInput(percent_off=percent)
    elif amount_off is not None:
        discount = DiscountInput(amount_off=amount_off)
    totals = compute_totals(
        [LineInput(line.unit_amount, line.quantity) for line in lines]
        + [LineInput(d.unit_amount, d.quantity) for d in drafts],
        discount,
        [TaxRateInput(Decimal(rate), inclusive) for rate, inclusive in rates],
    )
    assert totals.subtotal == max(net, 0)
    assert totals.total >= 0
