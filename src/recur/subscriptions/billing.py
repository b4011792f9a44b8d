"""The billing engine: finds subscriptions whose next action is due and carries it out.

An action is one of: end a trial and start the first paid period, renew into the next period,
or end a subscription set to cancel at period end. Subscriptions are claimed in batches (SKIP
LOCKED and a lease, so any number of workers and processes share the work), and a batch is
billed in steps, each done for the whole batch at once and each idempotent, so a worker that
dies anywhere leaves work the next run finishes, never repeats:

1. the new periods are written on the subscriptions as pending (one transaction);
2. their orders are made in one call to orders, keyed by (subscription, period start): asking
   twice returns the first;
3. the orders are charged in one call to payments, which refuses a second charge of an order
   that is paid or being paid;
4. the subscriptions move into their periods and their status follows the charges (one
   transaction).

Customers, plans and tax rates are read once per batch. When a batch fails, its subscriptions
are tried one at a time, so one broken subscription holds back no other.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from recur.kit.db import fetch_by_ids
from recur.orders.schemas import Order, OrderLineDraft, SubscriptionOrderDraft
from recur.subscriptions import changes as plan_changes
from recur.subscriptions import coupons, tax_rates
from recur.subscriptions import repository as repo
from recur.subscriptions.periods import period_boundary, period_containing
from recur.subscriptions.pricing import period_lines, terms_from_plan
from recur.subscriptions.tables import OUTBOX, subscriptions

if TYPE_CHECKING:
    from recur.payments.schemas import OrderCharge
    from recur.runtime import Runtime

log = logging.getLogger("recur.billing")

# How long a claimed subscription stays with the worker that claimed it before another may
# take it over (the first one presumably died).
LEASE = timedelta(seconds=60)

Outcome = Literal["paid", "failed", "unknown"]
Action = Literal["renewed", "failed", "canceled", "error"]


@dataclass
class BillRunResult:
    renewed: int = 0
    failed: int = 0
    canceled: int = 0
    errors: int = 0

    @property
    def processed(self) -> int:
        return self.renewed + self.failed + self.canceled + self.errors

    def count(self, action: Action) -> None:
        field = "errors" if action == "error" else action
        setattr(self, field, getattr(self, field) + 1)


def _begin(row: Any, plan: Any, now: datetime) -> tuple[str, dict[str, Any]] | None:
    """What a due subscription needs: ("canceled", values) when it ends instead of renewing,
    ("pending", values) for the period to bill next, or None when nothing is due."""
    if row.status in ("canceled", "paused"):
        return None
    if row.next_action_at is None or row.next_action_at > now:
        return None
    if row.cancel_at_period_end or row.status == "incomplete":
        # Set to end at period end, or never paid for its first period: it ends here.
        return "canceled", {
            "status": "canceled",
            "ended_at": row.current_period_end,
            "next_action_at": None,
            "claimed_until": None,
        }
    if row.status == "trialing":
        anchor = row.current_period_end  # the trial's end anchors the billing cycle
        start, end = anchor, period_boundary(anchor, plan.interval, plan.interval_count, 1)
    else:
        anchor = row.billing_cycle_anchor
        start = row.current_period_end
        end = period_boundary(anchor, plan.interval, plan.interval_count, row.period_index + 2)
    return "pending", {
        "billing_cycle_anchor": anchor,
        "pending_period_start": start,
        "pending_period_end": end,
    }


def _finish(row: Any, plan: Any, order: Order, outcome: Outcome) -> dict[str, Any]:
    """The subscription's values once the pending period's charge is known."""
    index, _, _ = period_containing(
        row.billing_cycle_anchor, plan.interval, plan.interval_count, row.pending_period_start
    )
    if outcome == "paid":
        status = "active"
    else:
        status = "incomplete" if row.status == "incomplete" else "past_due"
    return {
        "status": status,
        "period_index": index,
        "current_period_start": row.pending_period_start,
        "current_period_end": row.pending_period_end,
        "pending_period_start": None,
        "pending_period_end": None,
        "latest_order_id": order.id,
        "next_action_at": row.pending_period_end,
        "claimed_until": None,
    }


def _outcome(order: Order, charge: OrderCharge | None) -> Outcome:
    if charge is None:  # nothing was charged: the order was paid (credit) or is not payable
        return "paid" if order.status == "paid" else "failed"
    if charge.outcome in ("succeeded", "paid"):
        return "paid"
    if charge.outcome == "in_progress":
        return "unknown"  # the charge under way settles it; the next run looks again
    return "failed"


async def _save(
    uow: Any, rt: Runtime, tenant_id: str, changes: dict[str, dict[str, Any]], rows: dict[str, Any]
) -> list[Any]:
    """Write each subscription's changed values (one statement per set of columns); the rows
    as they are now."""
    now = rt.clock.now()
    by_columns: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for subscription_id, values in changes.items():
        by_columns[tuple(sorted(values))].append(subscription_id)
    for columns, ids in by_columns.items():
        await uow.execute(
            sa.update(subscriptions)
            .where(
                subscriptions.c.tenant_id == tenant_id,
                subscriptions.c.id == sa.bindparam("_id"),
            )
            .values({**{c: sa.bindparam(f"_{c}") for c in columns}, "updated": now}),
            [{"_id": i, **{f"_{c}": changes[i][c] for c in columns}} for i in ids],
        )
    return [_Row({**rows[i]._mapping, **values, "updated": now}) for i, values in changes.items()]


class _Row(dict[str, Any]):
    """A subscription row with changed values, read like a database row."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> dict[str, Any]:
        return self


async def _locked(uow: Any, tenant_id: str, ids: Sequence[str]) -> dict[str, Any]:
    rows = await fetch_by_ids(uow, subscriptions, tenant_id, ids, for_update=True)
    return {row.id: row for row in rows}


async def _plans(uow: Any, tenant_id: str, plan_ids: set[str]) -> dict[str, Any]:
    return {plan_id: await repo.plan_with_product(uow, tenant_id, plan_id) for plan_id in plan_ids}


async def _begin_periods(
    rt: Runtime, tenant_id: str, ids: Sequence[str], now: datetime
) -> tuple[list[Any], dict[str, Action]]:
    """Step 1: write the pending periods (and end what ends). The subscriptions with a pending
    period, to bill, and the actions already done."""
    actions: dict[str, Action] = {}
    async with rt.uow() as uow:
        rows = await _locked(uow, tenant_id, ids)
        plans = await _plans(uow, tenant_id, {row.plan_id for row in rows.values()})
        changes: dict[str, dict[str, Any]] = {}
        final_items: list[str] = []
        for row in rows.values():
            if row.pending_period_start is not None:
                continue  # begun by a run that died: billed below
            begun = _begin(row, plans[row.plan_id], now)
            if begun is not None:
                changes[row.id] = begun[1]
                if begun[0] == "canceled":
                    actions[row.id] = "canceled"
                    # Prorations not billed yet are billed with the end (settled after the
                    # commit, or by the next run: the subscription stays due until they are).
                    key = await plan_changes.bill_final_items(
                        uow, row, row.current_period_end, None
                    )
                    if key is not None:
                        changes[row.id].update(
                            pending_invoice_at=key, next_action_at=row.current_period_end
                        )
                        final_items.append(row.id)
                else:  # a change scheduled for the period's end starts with the new period
                    changes[row.id].update(plan_changes.next_period_values(row))
        saved = {row.id: row for row in await _save(uow, rt, tenant_id, changes, rows)}
        await plan_changes.claim_items_for_periods(
            uow,
            [
                plan_changes.PeriodKey(tenant_id, row.id, row.pending_period_start)
                for row in saved.values()
                if row.pending_period_start is not None
            ],
        )
        ended = [row for row in saved.values() if row.id in actions]
        await OUTBOX.record_many(
            uow,
            [
                (
                    tenant_id,
                    "subscription.canceled",
                    repo.to_subscription(row).model_dump(mode="json"),
                )
                for row in ended
            ],
            rt.clock.now(),
        )
        await uow.commit()
    for subscription_id in final_items:
        await plan_changes.settle_pending_invoice(rt, tenant_id, subscription_id)
    current = {**rows, **saved}
    return [row for row in current.values() if row.pending_period_start is not None], actions


async def _order_drafts(
    rt: Runtime, tenant_id: str, rows: list[Any]
) -> list[SubscriptionOrderDraft]:
    async with rt.uow() as uow:
        plans = await _plans(uow, tenant_id, {row.plan_id for row in rows})
        discounts = {
            row.id: await coupons.period_discount(uow, row, row.pending_period_start)
            for row in rows
            if row.coupon_id is not None
        }
        items = await plan_changes.period_items(
            uow,
            [plan_changes.PeriodKey(tenant_id, r.id, r.pending_period_start) for r in rows],
        )
    # The customers' tax rates as they are when the periods are ordered. Never inside our own
    # transaction: the customers service has its own.
    customers = await rt.customers.get_many(tenant_id, [row.customer_id for row in rows])
    wanted = sorted({i for c in customers.values() for i in c.tax_rate_ids})
    rates = {r.id: r for r in await tax_rates.get_tax_rates(rt, tenant_id, wanted)}
    drafts = []
    for row in rows:
        plan = plans[row.plan_id]
        terms = terms_from_plan(plan, plan.product_name)
        lines = period_lines(terms, row.quantity, row.pending_period_start, row.pending_period_end)
        customer = customers[row.customer_id]
        # Prorations of changes claimed for this period (outside any transaction: a credit
        # beyond the order goes to the customer's balance).
        extra = await plan_changes.renewal_item_lines(
            rt,
            row,
            lines,
            items[row.id],
            discounts.get(row.id),
            [rates[i] for i in customer.tax_rate_ids],
        )
        drafts.append(
            SubscriptionOrderDraft(
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
                ]
                + extra,
                discount=discounts.get(row.id),
                tax_rates=tax_rates.order_tax_rates([rates[i] for i in customer.tax_rate_ids]),
            )
        )
    return drafts


async def _finish_periods(
    rt: Runtime,
    tenant_id: str,
    billed: list[Any],
    orders: list[Order],
    outcomes: list[Outcome],
) -> dict[str, Action]:
    """Step 4: move the subscriptions into their new periods."""
    actions: dict[str, Action] = {}
    async with rt.uow() as uow:
        rows = await _locked(uow, tenant_id, [row.id for row in billed])
        plans = await _plans(uow, tenant_id, {row.plan_id for row in rows.values()})
        changes: dict[str, dict[str, Any]] = {}
        for before, order, outcome in zip(billed, orders, outcomes, strict=True):
            row = rows.get(before.id)
            if row is None or row.pending_period_start != before.pending_period_start:
                continue  # another worker finished this period
            if outcome == "unknown":
                continue
            changes[row.id] = _finish(row, plans[row.plan_id], order, outcome)
            actions[row.id] = "renewed" if outcome == "paid" else "failed"
        saved = await _save(uow, rt, tenant_id, changes, rows)
        await OUTBOX.record_many(
            uow,
            [
                (
                    tenant_id,
                    "subscription.updated",
                    repo.to_subscription(row).model_dump(mode="json"),
                )
                for row in saved
            ],
            rt.clock.now(),
        )
        await uow.commit()
    return actions


async def _advance_tenant(
    rt: Runtime, tenant_id: str, ids: Sequence[str], now: datetime
) -> dict[str, Action]:
    billed, actions = await _begin_periods(rt, tenant_id, ids, now)
    if not billed:
        return actions
    drafts = await _order_drafts(rt, tenant_id, billed)
    orders = await rt.orders.create_subscription_orders(tenant_id, drafts)
    payable = [o.id for o in orders if o.status == "open" and o.amount_due > 0]
    charges = {c.order_id: c for c in await rt.payments.charge_orders(tenant_id, payable)}
    outcomes = [_outcome(order, charges.get(order.id)) for order in orders]
    actions.update(await _finish_periods(rt, tenant_id, billed, orders, outcomes))
    return actions


async def advance_batch(rt: Runtime, rows: Sequence[Any], now: datetime) -> dict[str, Action]:
    """Carry out the due actions of these subscriptions as of `now`; what was done to each
    (those with nothing done are left out). Safe to call again at any point."""
    for row in rows:
        if row.pending_credit is not None:
            # A resume that died before granting its credit: rare, one at a time.
            await settle_pending_credit(rt, row.tenant_id, row.id)
        if row.pending_invoice_at is not None:
            # Likewise a change (`always_invoice`) or an end that died before billing its
            # prorations.
            await plan_changes.settle_pending_invoice(rt, row.tenant_id, row.id)
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_tenant[row.tenant_id].append(row.id)
    actions: dict[str, Action] = {}
    for tenant_id, ids in by_tenant.items():
        try:
            actions.update(await _advance_tenant(rt, tenant_id, ids, now))
        except Exception:
            if len(ids) == 1:
                # Its lease keeps this run from retrying it in a loop; the next run tries again.
                log.exception("bill run: subscription %s failed", ids[0])
                actions[ids[0]] = "error"
                continue
            log.warning("bill run: a batch of %d failed; one at a time", len(ids), exc_info=True)
            for subscription_id in ids:
                actions.update(await advance_batch(rt, [_only(rows, subscription_id)], now))
    return actions


def _only(rows: Sequence[Any], subscription_id: str) -> Any:
    return next(row for row in rows if row.id == subscription_id)


async def settle_pending_credit(rt: Runtime, tenant_id: str, subscription_id: str) -> None:
    """Grant the credit a resume owes the customer, once, then forget it."""
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
    return (await advance_batch(rt, [row], now)).get(subscription_id)


async def run(
    rt: Runtime,
    *,
    test_clock_id: str | None = None,
    now: datetime | None = None,
    batch_size: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_actions: Callable[[dict[str, Action]], None] | None = None,
) -> BillRunResult:
    """Carry out everything due up to `now` (the real time, or a test clock's).
    `on_progress` hears each batch's size, `on_actions` what was done to each (for metrics)."""
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
        actions = await advance_batch(rt, claimed, now)
        for action in actions.values():
            result.count(action)
        if on_progress is not None:
            on_progress(len(claimed))
        if on_actions is not None:
            on_actions(actions)


async def count_due(
    rt: Runtime, *, test_clock_id: str | None = None, now: datetime | None = None
) -> int:
    """How many subscriptions have an action due (for the progress bar)."""
    async with rt.uow() as uow:
        return await repo.count_due(uow, now=now or rt.clock.now(), test_clock_id=test_clock_id)
