"""A subscription's life after it starts: cancel, reactivate, pause and resume."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from recur.kit.errors import Conflict, NotFound
from recur.subscriptions import billing, change_quotes, changes
from recur.subscriptions import repository as repo
from recur.subscriptions.periods import period_boundary
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


async def cancel_subscription(
    rt: Runtime, tenant_id: str, subscription_id: str, at_period_end: bool, prorate: bool = False
) -> Subscription:
    """End a subscription now, or at the end of its current period (no further orders).

    Ending now with `prorate` settles the period at once: the credit for its unused time (on
    the basis a change's credit uses) and the items of `create_prorations` changes not yet
    billed are netted, a charge ordered and charged now as the subscription's final order, a
    credit granted to the customer's balance. Without `prorate` nothing is credited and those
    items are dropped.
    """
    existing = await _existing(rt, tenant_id, subscription_id)
    now = await clock_now(rt, tenant_id, existing.test_clock_id)
    if at_period_end:
        return await _cancel_at_period_end(rt, tenant_id, subscription_id, now)
    # An `always_invoice` change that a dead process left unsettled is settled first: its
    # items are not this cancel's.
    await changes.settle_pending_invoice(rt, tenant_id, subscription_id)
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
    credit = None
    if prorate and row.status != "canceled":
        credit = await change_quotes.unused_time_line(rt, row, now, landing=now)
    async with rt.uow() as uow:
        current = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert current is not None
        if current.status == "canceled":
            raise Conflict("the subscription is canceled already")
        if current.pending_period_start is not None:
            raise Conflict("a renewal is under way; try again in a moment")
        if changes.quote_inputs(current) != changes.quote_inputs(row):
            raise Conflict("the subscription changed meanwhile; try again")
        values: dict[str, Any] = {
            "status": "canceled",
            "canceled_at": now,
            "ended_at": now,
            "next_action_at": None,
        }
        billed_at = None
        if prorate:
            billed_at = await changes.bill_final_items(uow, current, now, credit)
        else:
            await changes.drop_unbilled_items(uow, current)
        if billed_at is not None:
            # Settled right after this commit; if the process dies first, by the bill run
            # (the subscription stays due until it is).
            values.update(pending_invoice_at=billed_at, next_action_at=now)
        subscription = await _save(
            uow, rt, tenant_id, subscription_id, values, "subscription.canceled"
        )
        await uow.commit()
    if billed_at is not None:
        await changes.settle_pending_invoice(rt, tenant_id, subscription_id)
    return subscription


async def _cancel_at_period_end(
    rt: Runtime, tenant_id: str, subscription_id: str, now: datetime
) -> Subscription:
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert row is not None
        if row.status == "canceled":
            raise Conflict("the subscription is canceled already")
        if row.cancel_at_period_end:
            raise Conflict("the subscription is set to cancel at period end already")
        subscription = await _save(
            uow,
            rt,
            tenant_id,
            subscription_id,
            {"cancel_at_period_end": True, "canceled_at": now},
            "subscription.updated",
        )
        await uow.commit()
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
    the pause is credited (on the basis a change's credit uses), so no time is paid for twice.

    The new period is begun as a renewal begins one: it takes a change scheduled for the end
    of the paused period, and its order carries the items of changes not yet billed.
    """
    existing = await _existing(rt, tenant_id, subscription_id)
    now = await clock_now(rt, tenant_id, existing.test_clock_id)
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
    # The credit goes to the balance, which the new period's order (from `now`) spends after
    # its discount: counted as a change's net credit landing on that order would be.
    line = None
    if row.status == "paused":
        line = await change_quotes.unused_time_line(rt, row, now, landing=now)
    credit = 0 if line is None else await changes.balance_worth(rt, row, -line.amount, now)
    async with rt.uow() as uow:
        current = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert current is not None
        if current.status != "paused":
            raise Conflict("only a paused subscription can be resumed")
        if changes.quote_inputs(current) != changes.quote_inputs(row):
            raise Conflict("the subscription changed meanwhile; try again")
        values: dict[str, Any] = changes.next_period_values(current)
        plan = await repo.get_plan(uow, tenant_id, values.get("plan_id", current.plan_id))
        end = period_boundary(now, plan.interval, plan.interval_count, 1)
        values.update(
            billing_cycle_anchor=now,
            pending_period_start=now,
            pending_period_end=end,
            paused_at=None,
            next_action_at=now,
            claimed_until=rt.clock.now() + billing.LEASE,
        )
        if credit > 0:
            values.update(
                pending_credit=credit,
                pending_credit_source=f"{subscription_id}:resume:{now.isoformat()}",
            )
        await _save(uow, rt, tenant_id, subscription_id, values, "subscription.resumed")
        await changes.claim_items_for_periods(
            uow, [changes.PeriodKey(tenant_id, subscription_id, now)]
        )
        await uow.commit()
    await billing.advance_subscription(rt, tenant_id, subscription_id, now)
    return await _existing(rt, tenant_id, subscription_id)
