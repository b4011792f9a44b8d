"""The invoice: an order rendered as a printable HTML document."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from recur.customers.schemas import Customer
from recur.kit.money import format_amount
from recur.orders.schemas import Order


def _date(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d") if moment is not None else ""


def _percentage(value: Decimal) -> str:
    return format(value.normalize(), "f")  # 20, 7.625: no trailing zeros, no exponent


@cache
def _environment() -> Environment:
    # Built on first use, not at import. Autoescape everything: customer names, addresses and
    # line descriptions are user input.
    env = Environment(
        loader=PackageLoader("recur.orders", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = format_amount
    env.filters["date"] = _date
    env.filters["percentage"] = _percentage
    return env


def render(order: Order, customer: Customer) -> str:
    """The invoice of `order` billed to `customer`, as one self-contained HTML page."""
    template = _environment().get_template("invoice.html")
    return template.render(order=order, customer=customer)
