"""All SQL of the Subscription Manager."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recur.kit.db import UnitOfWork, claim_leased
from recur.kit.pagination import fetch_page
from recur.subscriptions.schemas import Coupon, Plan, Product, Subscription, TaxRate, TestClock
from recur.subscriptions.tables import (
    coupon_redemptions,
    coupons,
    plans,
    products,
    subscription_pending_items,
    subscriptions,
    tax_rates,
    test_clocks,
)


# Rows carry every column the public models have (and a few internal ones, which are ignored).
def to_product(row: Any) -> Product:
    return Product.model_validate(row._mapping)


def to_plan(row: Any) -> Plan:
    return Plan.model_validate(row._mapping)


def to_subscription(row: Any) -> Subscription:
    return Subscription.model_validate(row._mapping)


def to_test_clock(row: Any) -> TestClock:
    return TestClock.model_validate(row._mapping)


def to_coupon(row: Any) -> Coupon:
    return Coupon.model_validate(row._mapping)


def to_tax_rate(row: Any) -> TaxRate:
    return TaxRate.model_validate(row._mapping)


async def _one(uow: UnitOfWork, table: sa.Table, tenant_id: str, object_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(table).where(table.c.tenant_id == tenant_id, table.c.id == object_id)
    )


async def get_product(uow: UnitOfWork, tenant_id: str, product_id: str) -> Any:
    return await _one(uow, products, tenant_id, product_id)


async def get_plan(uow: UnitOfWork, tenant_id: str, plan_id: str) -> Any:
    return await _one(uow, plans, tenant_id, plan_id)


async def get_test_clock(uow: UnitOfWork, tenant_id: str, clock_id: str) -> Any:
    return await _one(uow, test_clocks, tenant_id, clock_id)


async def get_subscription(
    uow: UnitOfWork, tenant_id: str, subscription_id: str, *, for_update: bool = False
) -> Any:
    stmt = sa.select(subscriptions).where(
        subscriptions.c.tenant_id == tenant_id, subscriptions.c.id == subscription_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return await uow.fetch_one(stmt)


async def insert(uow: UnitOfWork, table: sa.Table, values: dict[str, Any]) -> None:
    await uow.execute(sa.insert(table).values(**values))


async def update(
    uow: UnitOfWork, table: sa.Table, tenant_id: str, object_id: str, values: dict[str, Any]
) -> None:
    await uow.execute(
        sa.update(table)
        .where(table.c.tenant_id == tenant_id, table.c.id == object_id)
        .values(**values)
    )


async def page(
    uow: UnitOfWork,
    table: sa.Table,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    **filters: Any,
) -> tuple[Sequence[Any], bool]:
    stmt = sa.select(table).where(table.c.tenant_id == tenant_id)
    for column, value in filters.items():
        if value is not None:
            stmt = stmt.where(table.c[column] == value)
    return await fetch_page(uow, stmt, table.c.id, limit, starting_after)


async def claim_due(
    uow: UnitOfWork,
    *,
    now: datetime,
    wall_now: datetime,
    lease_until: datetime,
    test_clock_id: str | None,
    limit: int,
) -> Sequence[Any]:
    """Claim up to `limit` subscriptions whose next action is due, skipping rows that another
    worker holds (SKIP LOCKED) or has leased, and lease them to this worker."""
    clock_filter = (
        subscriptions.c.test_clock_id.is_(None)
        if test_clock_id is None
        else subscriptions.c.test_clock_id == test_clock_id
    )
    return await claim_leased(
        uow,
        subscriptions,
        key=subscriptions.c.id,
        where=[
            subscriptions.c.next_action_at <= now,
            clock_filter,
            sa.or_(
                subscriptions.c.claimed_until.is_(None),
                subscriptions.c.claimed_until < wall_now,
            ),
        ],
        order_by=subscriptions.c.next_action_at,
        limit=limit,
        lease_until=lease_until,
    )


async def count_due(uow: UnitOfWork, *, now: datetime, test_clock_id: str | None) -> int:
    clock_filter = (
        subscriptions.c.test_clock_id.is_(None)
        if test_clock_id is None
        else subscriptions.c.test_clock_id == test_clock_id
    )
    stmt = sa.select(sa.func.count()).where(subscriptions.c.next_action_at <= now, clock_filter)
    return int((await uow.execute(stmt)).scalar_one())


async def next_due_on_clock(
    uow: UnitOfWork, tenant_id: str, test_clock_id: str, *, until: datetime, wall_now: datetime
) -> datetime | None:
    """The earliest next action due by `until` on a test clock, of subscriptions no worker
    holds a lease on."""
    stmt = sa.select(sa.func.min(subscriptions.c.next_action_at)).where(
        subscriptions.c.tenant_id == tenant_id,
        subscriptions.c.test_clock_id == test_clock_id,
        subscriptions.c.next_action_at <= until,
        sa.or_(
            subscriptions.c.claimed_until.is_(None),
            subscriptions.c.claimed_until < wall_now,
        ),
    )
    return (await uow.execute(stmt)).scalar_one_or_none()


async def plan_with_product(uow: UnitOfWork, tenant_id: str, plan_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(plans, products.c.name.label("product_name"))
        .join(products, products.c.id == plans.c.product_id)
        .where(plans.c.tenant_id == tenant_id, plans.c.id == plan_id)
    )


async def get_coupon(uow: UnitOfWork, tenant_id: str, coupon_id: str) -> Any:
    return await _one(uow, coupons, tenant_id, coupon_id)


async def redemption_exists(
    uow: UnitOfWork, tenant_id: str, coupon_id: str, redeemed_by: str
) -> bool:
    row = await uow.fetch_one(
        sa.select(coupon_redemptions.c.coupon_id).where(
            coupon_redemptions.c.tenant_id == tenant_id,
            coupon_redemptions.c.coupon_id == coupon_id,
            coupon_redemptions.c.redeemed_by == redeemed_by,
        )
    )
    return row is not None


async def count_redemption(
    uow: UnitOfWork, tenant_id: str, coupon_id: str, redeemed_by: str, at: datetime
) -> bool:
    """Count one use of the coupon unless it has none left; whether it was counted.

    The check and the increment are one conditional UPDATE, so concurrent redemptions of the
    last use cannot both succeed.
    """
    result = await uow.execute(
        sa.update(coupons)
        .where(
            coupons.c.tenant_id == tenant_id,
            coupons.c.id == coupon_id,
            sa.or_(
                coupons.c.max_redemptions.is_(None),
                coupons.c.times_redeemed < coupons.c.max_redemptions,
            ),
        )
        .values(times_redeemed=coupons.c.times_redeemed + 1)
    )
    if result.rowcount != 1:
        return False
    await uow.execute(
        sa.insert(coupon_redemptions).values(
            tenant_id=tenant_id, coupon_id=coupon_id, redeemed_by=redeemed_by, created=at
        )
    )
    return True


async def uncount_redemption(
    uow: UnitOfWork, tenant_id: str, coupon_id: str, redeemed_by: str
) -> None:
    """Give back the use counted for `redeemed_by`, if one was (and only once)."""
    result = await uow.execute(
        sa.delete(coupon_redemptions).where(
            coupon_redemptions.c.tenant_id == tenant_id,
            coupon_redemptions.c.coupon_id == coupon_id,
            coupon_redemptions.c.redeemed_by == redeemed_by,
        )
    )
    if result.rowcount == 1:
        await uow.execute(
            sa.update(coupons)
            .where(coupons.c.tenant_id == tenant_id, coupons.c.id == coupon_id)
            .values(times_redeemed=coupons.c.times_redeemed - 1)
        )


async def get_tax_rate(uow: UnitOfWork, tenant_id: str, tax_rate_id: str) -> Any:
    return await _one(uow, tax_rates, tenant_id, tax_rate_id)


async def tax_rates_by_id(
    uow: UnitOfWork, tenant_id: str, tax_rate_ids: Sequence[str]
) -> dict[str, Any]:
    if not tax_rate_ids:
        return {}
    rows = await uow.fetch_all(
        sa.select(tax_rates).where(
            tax_rates.c.tenant_id == tenant_id, tax_rates.c.id.in_(list(tax_rate_ids))
        )
    )
    return {row.id: row for row in rows}


# --- pending proration items ---------------------------------------------------------------


async def insert_pending_items(uow: UnitOfWork, items: Sequence[dict[str, Any]]) -> None:
    if items:
        await uow.execute(sa.insert(subscription_pending_items), list(items))


async def claim_pending_items(
    uow: UnitOfWork, periods: Sequence[tuple[str, str, datetime]]
) -> None:
    """Bill every unbilled item of each (tenant, subscription) on the period starting then."""
    if not periods:
        return
    items = subscription_pending_items
    await uow.execute(
        sa.update(items)
        .where(
            items.c.tenant_id == sa.bindparam("t_id"),
            items.c.subscription_id == sa.bindparam("s_id"),
            items.c.billed_period_start.is_(None),
        )
        .values(billed_period_start=sa.bindparam("p_start")),
        [{"t_id": t, "s_id": s, "p_start": p} for t, s, p in periods],
    )


async def delete_unbilled_items(uow: UnitOfWork, tenant_id: str, subscription_id: str) -> None:
    """Drop the subscription's items that no period or order has billed."""
    items = subscription_pending_items
    await uow.execute(
        sa.delete(items).where(
            items.c.tenant_id == tenant_id,
            items.c.subscription_id == subscription_id,
            items.c.billed_period_start.is_(None),
        )
    )


async def items_billed_on(
    uow: UnitOfWork, periods: Sequence[tuple[str, str, datetime]]
) -> Sequence[Any]:
    """The items billed on each (tenant, subscription, period start), oldest first."""
    if not periods:
        return []
    items = subscription_pending_items
    rows = await uow.fetch_all(
        sa.select(items)
        .where(
            items.c.tenant_id.in_(sorted({t for t, _, _ in periods})),
            items.c.subscription_id.in_(sorted({s for _, s, _ in periods})),
            items.c.billed_period_start.in_(sorted({p for _, _, p in periods})),
        )
        .order_by(items.c.id)
    )
    wanted = set(periods)
    return [r for r in rows if (r.tenant_id, r.subscription_id, r.billed_period_start) in wanted]


async def last_billed_item_start(
    uow: UnitOfWork, tenant_id: str, subscription_id: str, since: datetime
) -> datetime | None:
    """The latest period start an item of the subscription was billed at, from `since` on."""
    items = subscription_pending_items
    stmt = sa.select(sa.func.max(items.c.billed_period_start)).where(
        items.c.tenant_id == tenant_id,
        items.c.subscription_id == subscription_id,
        items.c.billed_period_start >= since,
    )
    return (await uow.execute(stmt)).scalar_one_or_none()
