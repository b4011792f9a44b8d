"""All SQL of the Order Processing Service."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recur.kit.db import (
    UnitOfWork,
    fetch_by_ids,
    insert_ignoring_conflicts,
    next_number,
    next_numbers,
)
from recur.kit.pagination import fetch_page
from recur.orders.schemas import Order, OrderDiscount, OrderLine, OrderTaxAmount
from recur.orders.tables import counters, order_lines, orders


def amount_due(status: str, total: int, amount_paid: int, credit_applied: int = 0) -> int:
    # A void order is owed nothing, whatever its total; credit from the customer's balance
    # pays its part before any charge.
    return 0 if status == "void" else max(total - credit_applied - amount_paid, 0)


def to_line(row: Any) -> OrderLine:
    return OrderLine(
        id=row.id,
        kind=row.kind,
        description=row.description,
        quantity=row.quantity,
        unit_amount=row.unit_amount,
        amount=row.amount,
        currency=row.currency,
        period_start=row.period_start,
        period_end=row.period_end,
    )


def to_order(row: Any, lines: Sequence[Any]) -> Order:
    return Order(
        id=row.id,
        number=row.number,
        customer_id=row.customer_id,
        subscription_id=row.subscription_id,
        status=row.status,
        currency=row.currency,
        lines=[to_line(line) for line in lines],
        subtotal=row.subtotal,
        discount=(
            OrderDiscount(coupon_id=row.coupon_id, name=row.coupon_name, amount=row.discount_amount)
            if row.coupon_id is not None
            else None
        ),
        tax=row.tax,
        tax_amounts=[OrderTaxAmount.model_validate(t) for t in row.tax_amounts or []],
        total_excluding_tax=row.total - row.tax,
        total=row.total,
        amount_paid=row.amount_paid,
        credit_applied=row.credit_applied,
        amount_due=amount_due(row.status, row.total, row.amount_paid, row.credit_applied),
        period_start=row.period_start,
        period_end=row.period_end,
        description=row.description,
        created=row.created,
        finalized_at=row.finalized_at,
        paid_at=row.paid_at,
        voided_at=row.voided_at,
        marked_uncollectible_at=row.marked_uncollectible_at,
    )


async def next_order_number(uow: UnitOfWork, tenant_id: str) -> int:
    return await next_number(uow, counters, tenant_id, "order")


async def insert(uow: UnitOfWork, values: dict[str, Any]) -> None:
    await uow.execute(sa.insert(orders).values(**values))


async def insert_lines(uow: UnitOfWork, rows: list[dict[str, Any]]) -> None:
    await uow.execute(sa.insert(order_lines), rows)


async def get(uow: UnitOfWork, tenant_id: str, order_id: str, *, for_update: bool = False) -> Any:
    stmt = sa.select(orders).where(orders.c.tenant_id == tenant_id, orders.c.id == order_id)
    if for_update:
        # Row lock on PostgreSQL; SQLite's BEGIN IMMEDIATE already serializes writers.
        stmt = stmt.with_for_update()
    return await uow.fetch_one(stmt)


async def lines_of(
    uow: UnitOfWork, tenant_id: str, order_ids: Sequence[str]
) -> dict[str, list[Any]]:
    """The lines of several orders in one query, in their order on each order."""
    by_order: dict[str, list[Any]] = defaultdict(list)
    if not order_ids:
        return by_order
    rows = await uow.fetch_all(
        sa.select(order_lines)
        .where(order_lines.c.tenant_id == tenant_id, order_lines.c.order_id.in_(order_ids))
        .order_by(order_lines.c.order_id, order_lines.c.position)
    )
    for row in rows:
        by_order[row.order_id].append(row)
    return by_order


async def update(uow: UnitOfWork, tenant_id: str, order_id: str, values: dict[str, Any]) -> None:
    await uow.execute(
        sa.update(orders)
        .where(orders.c.tenant_id == tenant_id, orders.c.id == order_id)
        .values(**values)
    )


async def page(
    uow: UnitOfWork,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    *,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    status: str | None = None,
) -> tuple[Sequence[Any], bool]:
    stmt = sa.select(orders).where(orders.c.tenant_id == tenant_id)
    if customer_id is not None:
        stmt = stmt.where(orders.c.customer_id == customer_id)
    if subscription_id is not None:
        stmt = stmt.where(orders.c.subscription_id == subscription_id)
    if status is not None:
        stmt = stmt.where(orders.c.status == status)
    return await fetch_page(uow, stmt, orders.c.id, limit, starting_after)


async def get_many(
    uow: UnitOfWork, tenant_id: str, order_ids: Sequence[str], *, for_update: bool = False
) -> list[Any]:
    return await fetch_by_ids(uow, orders, tenant_id, order_ids, for_update=for_update)


async def by_periods(
    uow: UnitOfWork, tenant_id: str, keys: Sequence[tuple[str, datetime]]
) -> dict[tuple[str, datetime], Any]:
    """The orders of these (subscription, period start) pairs that exist, by pair.

    Looked up by subscription alone and the tenant's kept here, for the reason `fetch_by_ids`
    gives: a plan that probes `ix_orders_subscription_period` whatever the statistics."""
    if not keys:
        return {}
    rows = await uow.fetch_all(
        sa.select(orders).where(
            orders.c.subscription_id.in_({subscription_id for subscription_id, _ in keys}),
            orders.c.period_start.in_({start for _, start in keys}),
        )
    )
    wanted = set(keys)
    return {
        key: row
        for row in rows
        if row.tenant_id == tenant_id and (key := (row.subscription_id, row.period_start)) in wanted
    }


async def insert_many_if_absent(uow: UnitOfWork, rows: list[dict[str, Any]]) -> set[str]:
    """Insert orders, skipping any whose unique keys exist; the ids of those inserted."""
    # Executed for many rows (SQLAlchemy batches them into multi-row statements, compiled once).
    stmt = insert_ignoring_conflicts(uow.conn, orders).returning(orders.c.id)
    return set((await uow.execute(stmt, rows)).scalars())


async def next_order_numbers(uow: UnitOfWork, tenant_id: str, count: int) -> range:
    return await next_numbers(uow, counters, tenant_id, "order", count)
