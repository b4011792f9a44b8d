"""Shared checks and look-ups: ids, text, currency, and the customer, order or payment method."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.money import CurrencyError, normalize_currency
from recur.payments import repository as repo

if TYPE_CHECKING:
    from recur.customers.schemas import Customer
    from recur.orders.schemas import Order
    from recur.runtime import Runtime

# Every Recur id is letters, digits and underscores. Anything else names nothing, and must not
# reach the database: PostgreSQL refuses a NUL byte with an error, not an empty result.
_ID = re.compile(r"[A-Za-z0-9_]{1,64}")


def _check_id(value: str, param: str, what: str) -> str:
    if not _ID.fullmatch(value):
        raise NotFound(f"no such {what}", param=param)
    return value


def _check_filters(**filters: str | None) -> None:
    for param, value in filters.items():
        if value is not None and not _ID.fullmatch(value):
            raise InvalidRequest(f"{param} is not an id", param=param)


def _check_text(value: str | None, param: str) -> str | None:
    # Pydantic refuses lone surrogates already; PostgreSQL refuses NUL in text with an error.
    if value is not None and "\x00" in value:
        raise InvalidRequest(f"{param} may not contain NUL characters", param=param)
    return value


def _currency(code: str, param: str = "currency") -> str:
    try:
        return normalize_currency(code)
    except CurrencyError:
        raise InvalidRequest(f"unknown currency {code[:8]!r}", param=param) from None


async def _customer(rt: Runtime, tenant_id: str, customer_id: str) -> Customer:
    _check_id(customer_id, "customer_id", "customer")
    return await rt.customers.get(tenant_id, customer_id)


async def _order(rt: Runtime, tenant_id: str, order_id: str) -> Order:
    _check_id(order_id, "order_id", "order")
    try:
        return await rt.orders.get(tenant_id, order_id)
    except NotFound:
        raise NotFound(f"no such order: {order_id}", param="order_id") from None


async def _method_row(rt: Runtime, tenant_id: str, payment_method_id: str) -> Any:
    _check_id(payment_method_id, "payment_method_id", "payment method")
    async with rt.uow() as uow:
        row = await repo.get_payment_method(uow, tenant_id, payment_method_id)
    if row is None:
        raise NotFound(f"no such payment method: {payment_method_id}", param="payment_method_id")
    return row
