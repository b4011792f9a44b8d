"""The pure totals computation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recur.kit.errors import InvalidRequest
from recur.kit.money import MAX_MINOR
from recur.orders.totals import LineInput, compute_totals

lines = st.lists(
    st.builds(LineInput, st.integers(0, 10**9), st.integers(0, 10**6)), min_size=1, max_size=20
)


@given(lines)
def test_total_is_the_sum_of_line_amounts(given_lines: list[LineInput]) -> None:
    totals = compute_totals(given_lines)
    assert totals.line_amounts == tuple(li.unit_amount * li.quantity for li in given_lines)
    assert totals.subtotal == sum(totals.line_amounts)
    assert totals.total == totals.subtotal


def test_bounds() -> None:
    assert compute_totals([LineInput(MAX_MINOR, 1)]).total == MAX_MINOR
    with pytest.raises(InvalidRequest) as caught:
        compute_totals([LineInput(1, 1), LineInput(MAX_MINOR + 1, 1)])
    assert caught.value.param == "lines.1.unit_amount"
    with pytest.raises(InvalidRequest) as caught:
        compute_totals([LineInput(MAX_MINOR, 2)])
    assert caught.value.param == "lines.0"
    with pytest.raises(InvalidRequest) as caught:
        compute_totals([LineInput(MAX_MINOR, 1), LineInput(1, 1)])
    assert caught.value.param == "lines"
    with pytest.raises(InvalidRequest) as caught:
        compute_totals([LineInput(1, -1)])
    assert caught.value.param == "lines.0.quantity"


def test_credits_may_lower_the_total_but_not_below_zero() -> None:
    assert compute_totals([LineInput(1000, 1), LineInput(-400, 1)]).total == 600
    with pytest.raises(InvalidRequest):
        compute_totals([LineInput(100, 1), LineInput(-400, 1)])
