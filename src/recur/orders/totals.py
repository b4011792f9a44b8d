"""What an order adds up to: pure functions over plain values, no database.

Discounts and tax will be steps of `compute_totals`; today the total is the subtotal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from recur.kit.errors import InvalidRequest
from recur.kit.money import MAX_MINOR


@dataclass(frozen=True)
class LineInput:
    unit_amount: int
    quantity: int


@dataclass(frozen=True)
class Totals:
    line_amounts: tuple[int, ...]
    subtotal: int
    total: int


def _check_minor(value: int, param: str, what: str) -> int:
    # Amounts live in BIGINT columns: past that they could not be stored, let alone paid.
    if abs(value) > MAX_MINOR:
        raise InvalidRequest(f"{what} is larger than {MAX_MINOR}", param=param)
    return value


def compute_totals(lines: Sequence[LineInput]) -> Totals:
    """Each line's amount (unit amount x quantity), the subtotal and the total.

    Raises InvalidRequest (param naming the line) when any amount leaves the 64-bit range, and
    when the total is negative: credits need customer balances, which Recur does not have yet.
    """
    amounts = []
    for i, line in enumerate(lines):
        _check_minor(line.unit_amount, f"lines.{i}.unit_amount", "unit_amount")
        if line.quantity < 0:
            raise InvalidRequest("quantity cannot be negative", param=f"lines.{i}.quantity")
        amounts.append(
            _check_minor(line.unit_amount * line.quantity, f"lines.{i}", "the line's amount")
        )
    subtotal = _check_minor(sum(amounts), "lines", "the subtotal")
    total = subtotal
    if total < 0:
        raise InvalidRequest("an order's total cannot be negative", param="lines")
    return Totals(line_amounts=tuple(amounts), subtotal=subtotal, total=total)
