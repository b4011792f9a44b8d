"""The billing engine: finds subscriptions whose next action is due and carries it out.

An action is one of: end a trial and start the first paid period, renew into the next period,
or end a subscription set to cancel at period end. A new period is billed in three steps, each
idempotent, so a worker that dies anywhere leaves work the next run finishes, never repeats:

1. the period is written on the subscription as pending (committed);
2. its order is made, keyed by (subscription, period start): asking twice returns the first;
3. the order is charged; payments refuses a second charge of an order that is paid or being paid;
then the subscription moves into the period and its status follows the charge.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from recur.kit.errors import Conflict, InvalidRequest
from recur.orders.schemas import Order, OrderLineDraft, SubscriptionOrderDraft
from recur.subscriptions import coupons, tax_rates
from recur.subscriptions import repository as repo
from recur.subscriptions.periods import period_boundary, period_containing
from recur.subscriptions.pricing import period_lines, terms_from_plan
from recur.subscriptions.tables import OUTBOX, subscriptions

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime

log = logging.getLogger("recur.billing")

# How long a claimed subscription stays with the worker that claimed it before another may
# take it over (the first one presumably died).
LEASE = timedelta(seconds=60)

Outcome = Literal["paid", "failed", "unknown"]


@dataclass
class BillRunResult:
    renewed: int = 0
    failed: int = 0
    canceled: int = 0
    errors: int = 0

    @property
    def processed(self) -> int:
        return self.renewed + self.failed + self.canceled + self.errors


async def _record(uow: UnitOfWork, rt: Runtime, row: Any, type_: str) -> None:
    await OUTBOX.record(
        uow, row.tenant_id, type_, repo.to_subscription(row).model_dump(mode="json"), rt.clock.now()
    )


async def _begin_period(uow: UnitOfWork, rt: Runtime, row: Any, now: datetime) -> str | None:
    """Decide what a due subscription needs; write a pending period if it needs one.

    Returns "canceled" when the subscription ended instead, or None when nothing is due."""
    values: dict[str, Any]
    if row.status in ("canceled", "paused"):
        return None
    if row.next_action_at is None or row.next_action_at > now:
        return None
    if row.cancel_at_period_end or row.status == "incomplete":
        # Set to end at period end, or never paid for its first period: it ends here.
        values = {
            "status": "canceled",
            "ended_at": row.current_period_end,
            "next_action_at": None,
            "claimed_until": None,
            "updated": rt.clock.now(),
        }
        await repo.update(uow, subscriptions, row.tenant_id, row.id, values)
        await _record(
            uow,
            rt,
            await repo.get_subscription(uow, row.tenant_id, row.id),
            "subscription.canceled",
        )
        return "canceled"
    plan = await repo.get_plan(uow, row.tenant_id, row.plan_id)
    if row.status == "trialing":
        anchor = row.current_period_end  # the trial's end anchors the billing cycle
        start, end = anchor, period_boundary(anchor, plan.interval, plan.interval_count, 1)
        values = {"billing_cycle_anchor": anchor}
    else:
        anchor = row.billing_cycle_anchor
        start = row.current_period_end
        end = period_boundary(anchor, plan.interval, plan.interval_count, row.period_index + 2)
        values = {}
    values.update(pending_period_start=start, pending_period_end=end, updated=rt.clock.now())
    await repo.update(uow, subscriptions, row.tenant_id, row.id, values)
    return "pending"


async def _order_period(rt: Runtime, row: Any) -> Order:
    async with rt.uow() as uow:
        plan = await repo.plan_with_product(uow, row.tenant_id, row.plan_id)
        discount = await coupons.period_discount(uow, row, row.pending_period_start)
    # The customer's tax rates as they are when the period is ordered.
    customer = await rt.customers.get(row.tenant_id, row.customer_id)
    taxes = await tax_rates.get_tax_rates(rt, row.tenant_id, customer.tax_rate_ids)
    terms = terms_from_plan(plan, plan.product_name)
    lines = period_lines(terms, row.quantity, row.pending_period_start, row.pending_period_end)
    draft = SubscriptionOrderDraft(
        customer_id=row.customer_id,
        subscription_id=row.id,
        currency=row.currency,
        period_start=row.pending_period_start,
        period_end=row.pending_period_end,
        lines=[
            OrderLineDraft(
                description=line.description,
                unit_amount=line.unit_amount,
                quantity=line.quantity,
                period_start=line.period_start,
                period_end=line.period_end,
            )
            for line in lines
        ],
        discount=discount,
        tax_rates=tax_rates.order_tax_rates(taxes),
    )
    return await rt.orders.create_subscription_order(row.tenant_id, draft)


async def _collect(rt: Runtime, tenant_id: str, order: Order) -> Outcome:
    if order.status == "paid":
        return "paid"
    if order.status != "open":
        return "failed"
    try:
        payment = await rt.payments.charge_order(tenant_id, order.id)
    except InvalidRequest as exc:
        if exc.code == "no_payment_method":
            return "failed"
        raise
    except Conflict:
        # Paid, or being paid, by someone else: the order says which.
        order = await rt.orders.get(tenant_id, order.id)
        return "paid" if order.status == "paid" else "unknown"
    return "paid" if payment.status == "succeeded" else "failed"


async def _finish_period(
    rt: Runtime, row: Any, order: Order, outcome: Outcome
) -> Literal["renewed", "failed"] | None:
    async with rt.uow() as uow:
        current = await repo.get_subscription(uow, row.tenant_id, row.id, for_update=True)
        if current is None or current.pending_period_start != row.pending_period_start:
            return None  # another worker finished this period
        if outcome == "unknown":
            return None  # the charge under way settles it; the next run looks again
        plan = await repo.get_plan(uow, row.tenant_id, row.plan_id)
        index, _, _ = period_containing(
            current.billing_cycle_anchor,
            plan.interval,
            plan.interval_count,
            current.pending_period_start,
        )
        if outcome == "paid":
            status = "active"
        else:
            status = "incomplete" if current.status == "incomplete" else "past_due"
        await repo.update(
            uow,
            subscriptions,
            row.tenant_id,
            row.id,
            {
                "status": status,
                "period_index": index,
                "current_period_start": current.pending_period_start,
                "current_period_end": current.pending_period_end,
                "trial_end": current.trial_end,
                "pending_period_start": None,
                "pending_period_end": None,
                "latest_order_id": order.id,
                "next_action_at": current.pending_period_end,
                "claimed_until": None,
                "updated": rt.clock.now(),
            },
        )
        await _record(
            uow, rt, await repo.get_subscription(uow, row.tenant_id, row.id), "subscription.updated"
        )
        await uow.commit()
    return "renewed" if outcome == "paid" else "failed"


async def settle_pending_credit(rt: Runtime, tenant_id: str, subscription_id: str) -> None:
    """Grant the credit a cancel or resume owes the customer, once, then forget it."""
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
    if row is None or row.pending_credit is None:
        return
    if row.pending_credit > 0:
        await rt.customers.grant_credit(
            tenant_id,
            row.customer_id,
            row.pending_credit,
            row.currency,
            type_="proration",
            source_id=row.pending_credit_source,
            description="Unused time",
        )
    async with rt.uow() as uow:
        values: dict[str, Any] = {"pending_credit": None, "pending_credit_source": None}
        if row.status in ("canceled", "paused") and row.pending_period_start is None:
            values.update(next_action_at=None, claimed_until=None)
        await repo.update(uow, subscriptions, tenant_id, subscription_id, values)
        await uow.commit()


async def advance_subscription(
    rt: Runtime, tenant_id: str, subscription_id: str, now: datetime
) -> str | None:
    """Carry out the subscription's due action as of `now`. Safe to call again at any point."""
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
    if row is None:
        return None
    if row.pending_credit is not None:
        await settle_pending_credit(rt, tenant_id, subscription_id)
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        assert row is not None
        if row.pending_period_start is None:
            began = await _begin_period(uow, rt, row, now)
            await uow.commit()
            if began != "pending":
                return began
            row = await repo.get_subscription(uow, tenant_id, subscription_id)
    order = await _order_period(rt, row)
    outcome = await _collect(rt, tenant_id, order)
    return await _finish_period(rt, row, order, outcome)


async def run(
    rt: Runtime,
    *,
    test_clock_id: str | None = None,
    now: datetime | None = None,
    batch_size: int | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> BillRunResult:
    """Carry out everything due up to `now` (the real time, or a test clock's)."""
    now = now or rt.clock.now()
    batch_size = batch_size or rt.settings.bill_run_batch_size
    result = BillRunResult()
    while True:
        wall_now = rt.clock.now()
        async with rt.uow() as uow:
            claimed = await repo.claim_due(
                uow,
                now=now,
                wall_now=wall_now,
                lease_until=wall_now + LEASE,
                test_clock_id=test_clock_id,
                limit=batch_size,
            )
            await uow.commit()
        if not claimed:
            return result
        for sub in claimed:
            try:
                action = await advance_subscription(rt, sub.tenant_id, sub.id, now)
            except Exception:
                # One broken subscription must not stop everyone else's renewal; its lease keeps
                # this run from retrying it in a loop, and the next run tries again.
                log.exception("bill run: subscription %s failed", sub.id)
                action = "error"
            if action == "renewed":
                result.renewed += 1
            elif action == "failed":
                result.failed += 1
            elif action == "canceled":
                result.canceled += 1
            elif action == "error":
                result.errors += 1
            if on_progress is not None:
                on_progress(1)


async def count_due(
    rt: Runtime, *, test_clock_id: str | None = None, now: datetime | None = None
) -> int:
    """How many subscriptions have an action due (for the progress bar)."""
    async with rt.uow() as uow:
        return await repo.count_due(uow, now=now or rt.clock.now(), test_clock_id=test_clock_id)
