"""A subscription's life after it starts: cancel, reactivate, pause and resume."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from recur.kit.errors import Conflict, NotFound
from recur.subscriptions import billing
from recur.subscriptions import repository as repo
from recur.subscriptions.periods import period_boundary
from recur.subscriptions.proration import unused_amount
from recur.subscriptions.schemas import Subscription
from recur.subscriptions.tables import OUTBOX, subscriptions
from recur.subscriptions.test_clocks import clock_now

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime


async def _existing(rt: Runtime, tenant_id: str, subscription_id: str) -> Subscription:
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
    if row is None:
        raise NotFound(f"no such subscription: {subscription_id}", param="subscription_id")
    return repo.to_subscription(row)


async def _save(
    uow: UnitOfWork,
    rt: Runtime,
    tenant_id: str,
    subscription_id: str,
    values: dict[str, Any],
    event: str,
) -> Subscription:
    await repo.update(
        uow, subscriptions, tenant_id, subscription_id, {**values, "updated": rt.clock.now()}
    )
    subscription = repo.to_subscription(
        await repo.get_subscription(uow, tenant_id, subscription_id)
    )
    await OUTBOX.record(uow, tenant_id, event, subscription.model_dump(mode="json"), rt.clock.now())
    return subscription


async def unused_paid_amount(rt: Runtime, tenant_id: str, sub: Subscription, at: datetime) -> int:
    """What the customer paid for the current period's time after `at` (0 if it is unpaid)."""
    if sub.latest_order_id is None or sub.status == "trialing":
        return 0
    order = await rt.orders.get(tenant_id, sub.latest_order_id)
    if order.period_start != sub.current_period_start:
        return 0
    settled = order.total - order.amount_due
    return unused_amount(settled, sub.current_period_start, sub.current_period_end, at)


async def cancel_subscription(
    rt: Runtime, tenant_id: str, subscription_id: str, at_period_end: bool, prorate: bool = False
) -> Subscription:
    """End a subscription now, or at the end of its current period (no further orders).

    Ending now with `prorate` credits the unused time of the paid period to the customer's
    balance, which its next orders spend before anything is charged.
    """
    existing = await _existing(rt, tenant_id, subscription_id)
    now = await clock_now(rt, tenant_id, existing.test_clock_id)
    credit = 0
    if prorate and not at_period_end:
        credit = await unused_paid_amount(rt, tenant_id, existing, now)
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert row is not None
        if row.status == "canceled":
            raise Conflict("the subscription is canceled already")
        if at_period_end:
            if row.cancel_at_period_end:
                raise Conflict("the subscription is set to cancel at period end already")
            values: dict[str, Any] = {"cancel_at_period_end": True, "canceled_at": now}
            event = "subscription.updated"
        else:
            values = {
                "status": "canceled",
                "canceled_at": now,
                "ended_at": now,
                "next_action_at": None,
            }
            if credit > 0:
                # Granted right after this commit; if the process dies first, the bill run
                # grants it (the subscription stays due until it is).
                values.update(
                    pending_credit=credit,
                    pending_credit_source=f"{subscription_id}:cancel",
                    next_action_at=now,
                )
            event = "subscription.canceled"
        subscription = await _save(uow, rt, tenant_id, subscription_id, values, event)
        await uow.commit()
    if credit > 0:
        await billing.settle_pending_credit(rt, tenant_id, subscription_id)
    return subscription


async def reactivate_subscription(
    rt: Runtime, tenant_id: str, subscription_id: str
) -> Subscription:
    """Undo a pending cancel at period end: the subscription renews as before."""
    await _existing(rt, tenant_id, subscription_id)
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert row is not None
        if row.status == "canceled" or not row.cancel_at_period_end:
            raise Conflict("only a subscription set to cancel at period end can be reactivated")
        subscription = await _save(
            uow,
            rt,
            tenant_id,
            subscription_id,
            {"cancel_at_period_end": False, "canceled_at": None},
            "subscription.updated",
        )
        await uow.commit()
    return subscription


async def pause_subscription(rt: Runtime, tenant_id: str, subscription_id: str) -> Subscription:
    """Stop billing: no more orders from the end of the paid period, until resumed."""
    existing = await _existing(rt, tenant_id, subscription_id)
    now = await clock_now(rt, tenant_id, existing.test_clock_id)
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert row is not None
        if row.status not in ("active", "trialing", "past_due"):
            raise Conflict(f"a {row.status} subscription cannot be paused")
        if row.pending_period_start is not None:
            raise Conflict("a renewal is under way; try again in a moment")
        subscription = await _save(
            uow,
            rt,
            tenant_id,
            subscription_id,
            {"status": "paused", "paused_at": now, "next_action_at": None},
            "subscription.paused",
        )
        await uow.commit()
    return subscription


async def resume_subscription(rt: Runtime, tenant_id: str, subscription_id: str) -> Subscription:
    """Start a new period at once and charge it at once. Time left of the period paid before
    the pause is credited, so no time is paid for twice."""
    existing = await _existing(rt, tenant_id, subscription_id)
    now = await clock_now(rt, tenant_id, existing.test_clock_id)
    credit = await unused_paid_amount(rt, tenant_id, existing, now)
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert row is not None
        if row.status != "paused":
            raise Conflict("only a paused subscription can be resumed")
        plan = await repo.get_plan(uow, tenant_id, row.plan_id)
        end = period_boundary(now, plan.interval, plan.interval_count, 1)
        values: dict[str, Any] = {
            "billing_cycle_anchor": now,
            "pending_period_start": now,
            "pending_period_end": end,
            "paused_at": None,
            "next_action_at": now,
            "claimed_until": rt.clock.now() + billing.LEASE,
        }
        if credit > 0:
            values.update(
                pending_credit=credit,
                pending_credit_source=f"{subscription_id}:resume:{now.isoformat()}",
            )
        await _save(uow, rt, tenant_id, subscription_id, values, "subscription.resumed")
        await uow.commit()
    await billing.advance_subscription(rt, tenant_id, subscription_id, now)
    return await _existing(rt, tenant_id, subscription_id)
