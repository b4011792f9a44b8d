"""Plan and quantity changes, and the steps the billing engine takes for them.

A change now credits what was paid for the unused time of the current price and charges the
rest of the period at the new price (`proration.prorate_change`). What becomes of those lines
depends on `proration_behavior`:

- `create_prorations`: they wait as pending items of the subscription. The transaction that
  begins the next period claims them for it (`claim_items_for_periods`) and that period's order
  carries them (`period_items`, `renewal_item_lines`); a net credit beyond the order goes to the
  customer's balance, so no order ever totals below zero;
- `always_invoice`: they are ordered and charged at once, or credited to the customer's balance
  when they net to a credit (`settle_pending_invoice`);
- `none`: they are not made.

A subscription ended now settles what it still holds: with proration, its unbilled items and
the credit for its unused time are billed together at once (`bill_final_items`, then
`settle_pending_invoice`); without, its unbilled items are dropped (`drop_unbilled_items`).

A change for `period_end` is kept on the subscription and applied when the next period begins
(`next_period_values`). Every step is idempotent, so a process that dies between two of them
leaves work that the next step, or the subscription's next bill run, finishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.orders.schemas import DiscountTerms, Order, OrderLineDraft, SubscriptionOrderDraft
from recur.subscriptions import change_quotes, tax_rates
from recur.subscriptions import repository as repo
from recur.subscriptions.pricing import Line
from recur.subscriptions.proration import credit_value
from recur.subscriptions.schemas import (
    ChangePreview,
    ChangePreviewLine,
    Subscription,
    SubscriptionChange,
    TaxRate,
)
from recur.subscriptions.tables import OUTBOX, subscriptions

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime

_TICK = timedelta(microseconds=1)


# --- the billing engine's steps ------------------------------------------------------------


@dataclass(frozen=True)
class PeriodKey:
    """A subscription period being billed; its order carries the items claimed for it."""

    tenant_id: str
    subscription_id: str
    period_start: datetime


@dataclass(frozen=True)
class PendingItem:
    id: str
    description: str
    amount: int  # signed: credits are negative
    period_start: datetime
    period_end: datetime


def next_period_values(row: Any) -> dict[str, Any]:
    """What a subscription's next period starts with, for the transaction that begins it: the
    change scheduled for the period's end applied, and no proration basis left from the period
    that ends."""
    values: dict[str, Any] = {"proration_basis": None, "proration_basis_from": None}
    if row.pending_change is not None:
        values.update(
            plan_id=row.pending_change["plan_id"],
            quantity=row.pending_change["quantity"],
            pending_change=None,
        )
    return values


async def claim_items_for_periods(uow: UnitOfWork, periods: Sequence[PeriodKey]) -> None:
    """In the transaction that writes each pending period: the subscription's unbilled items
    go on that period's order. Items of a change made after it wait for the next one."""
    await repo.claim_pending_items(
        uow, [(p.tenant_id, p.subscription_id, p.period_start) for p in periods]
    )


async def period_items(
    uow: UnitOfWork, periods: Sequence[PeriodKey]
) -> dict[str, list[PendingItem]]:
    """The items claimed for each period, by subscription id (an empty list for none)."""
    found: dict[str, list[PendingItem]] = {p.subscription_id: [] for p in periods}
    rows = await repo.items_billed_on(
        uow, [(p.tenant_id, p.subscription_id, p.period_start) for p in periods]
    )
    for row in rows:
        found[row.subscription_id].append(
            PendingItem(row.id, row.description, row.amount, row.period_start, row.period_end)
        )
    return found


def _order_line(item: PendingItem) -> OrderLineDraft:
    return OrderLineDraft(
        description=item.description,
        unit_amount=item.amount,
        quantity=1,
        period_start=item.period_start,
        period_end=item.period_end,
    )


def _credit_worth(net_credit: int, discount: DiscountTerms | None, taxes: Sequence[TaxRate]) -> int:
    percent_off = discount.percent_off if discount is not None else None
    return credit_value(net_credit, percent_off, [t.percentage for t in taxes if not t.inclusive])


def order_item_lines(
    lines: Sequence[Line], items: Sequence[PendingItem]
) -> tuple[list[OrderLineDraft], int]:
    """The order lines of a period's items, to follow the period's own `lines`, and the credit
    that does not fit on the order. Pure.

    Items whose credit exceeds everything else would take the order below zero: a last line
    brings it to exactly zero, and what it takes off is returned, to go to the customer's
    balance.
    """
    drafts = [_order_line(item) for item in items]
    net = sum(line.amount for line in lines) + sum(item.amount for item in items)
    if net >= 0:
        return drafts, 0
    carried = OrderLineDraft(
        description="Credit beyond this order, moved to the customer's balance",
        unit_amount=-net,
        quantity=1,
    )
    return [*drafts, carried], -net


async def renewal_item_lines(
    rt: Runtime,
    row: Any,
    lines: Sequence[Line],
    items: Sequence[PendingItem],
    discount: DiscountTerms | None,
    taxes: Sequence[TaxRate],
) -> list[OrderLineDraft]:
    """The order lines of the items claimed for a subscription's pending period (`row`), to
    follow its own `lines` (`order_item_lines`). Outside any transaction: a credit beyond the
    order, less the order's percentage discount and plus its exclusive tax, is granted to the
    customer's balance, once per period however often the order is asked for.
    """
    drafts, carried = order_item_lines(lines, items)
    if carried:
        source = f"renewal:{row.pending_period_start.isoformat()}"
        await _grant(rt, row, _credit_worth(carried, discount, taxes), source)
    return drafts


async def settle_pending_invoice(rt: Runtime, tenant_id: str, subscription_id: str) -> None:
    """Order and charge the prorations of an `always_invoice` change, or of a subscription
    ended now (`bill_final_items`), or grant them to the customer's balance when they net to
    a credit. Outside any transaction; safe to call again at any point (the order is keyed by
    the change or the end, the credit by its source)."""
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
        if row is None or row.pending_invoice_at is None:
            return
        key = row.pending_invoice_at
        period = PeriodKey(tenant_id, subscription_id, key)
        items = (await period_items(uow, [period]))[subscription_id]
        discount = await change_quotes.percent_discount(uow, row, key)
    net = sum(item.amount for item in items)
    final = row.status == "canceled"
    if net != 0:
        customer = await rt.customers.get(tenant_id, row.customer_id)
        taxes = await tax_rates.get_tax_rates(rt, tenant_id, customer.tax_rate_ids)
        if net > 0:
            draft = SubscriptionOrderDraft(
                customer_id=row.customer_id,
                subscription_id=row.id,
                currency=row.currency,
                period_start=key,
                # Items left from a period that ended unrenewed (`unpaid`) end before the key.
                period_end=max(key, *(item.period_end for item in items)),
                lines=[_order_line(item) for item in items],
                description=(
                    "Final prorations of a canceled subscription"
                    if final
                    else "Prorations of a plan or quantity change"
                ),
                discount=discount,
                tax_rates=tax_rates.order_tax_rates(taxes),
            )
            (order,) = await rt.orders.create_subscription_orders(tenant_id, [draft])
            await _charge(rt, tenant_id, order)
        else:
            credit = _credit_worth(-net, discount, taxes)
            description = "Unused time" if final else "Unused time of a plan or quantity change"
            await _grant(rt, row, credit, f"change:{key.isoformat()}", description)
    async with rt.uow() as uow:
        current = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        if current is not None and current.pending_invoice_at == key:
            values: dict[str, Any] = {"pending_invoice_at": None}
            if current.status == "canceled" and current.pending_credit is None:
                # An ended subscription was due only for this.
                values.update(next_action_at=None, claimed_until=None)
            await repo.update(uow, subscriptions, tenant_id, subscription_id, values)
            await uow.commit()


async def bill_final_items(
    uow: UnitOfWork, row: Any, at: datetime, credit: ChangePreviewLine | None
) -> datetime | None:
    """In the transaction that ends a subscription at `at`: its unbilled items, and the
    `credit` for its unused time, are billed together at one key, returned for the caller to
    set as the subscription's `pending_invoice_at` (and make it due, so that the bill run
    settles them if `settle_pending_invoice` is never reached). None when nothing is billed."""
    key = await _invoice_key(uow, row, at)
    if credit is not None:
        await repo.insert_pending_items(uow, _item_rows(row, [credit], at, key))
    period = PeriodKey(row.tenant_id, row.id, key)
    await claim_items_for_periods(uow, [period])
    return key if (await period_items(uow, [period]))[row.id] else None


async def drop_unbilled_items(uow: UnitOfWork, row: Any) -> None:
    """In the transaction that ends a subscription now without proration: the prorations of
    its `create_prorations` changes are never billed (Stripe removes them likewise)."""
    await repo.delete_unbilled_items(uow, row.tenant_id, row.id)


async def balance_worth(rt: Runtime, row: Any, credit: int, landing: datetime) -> int:
    """What a credit for unused time (before discount and tax, taken for an order starting at
    `landing`: `change_quotes.unused_time_line`) is worth on the customer's balance, counted as
    a net credit of prorations is: less the percentage that order takes off, plus the
    customer's exclusive taxes."""
    if credit <= 0:
        return 0
    async with rt.uow() as uow:
        discount = await change_quotes.percent_discount(uow, row, landing)
    customer = await rt.customers.get(row.tenant_id, row.customer_id)
    taxes = await tax_rates.get_tax_rates(rt, row.tenant_id, customer.tax_rate_ids)
    return _credit_worth(credit, discount, taxes)


async def _grant(
    rt: Runtime,
    row: Any,
    credit: int,
    source: str,
    description: str = "Unused time of a plan or quantity change",
) -> None:
    """Credit prorations to the subscription's customer, once per `source` of the row's."""
    if credit > 0:
        await rt.customers.grant_credit(
            row.tenant_id,
            row.customer_id,
            credit,
            row.currency,
            type_="proration",
            source_id=f"{row.id}:{source}",
            description=description,
        )


async def _charge(rt: Runtime, tenant_id: str, order: Order) -> None:
    # A decline leaves the order open; payments retries it as it retries renewals (dunning),
    # unless the subscription has ended: then it stays open, to be paid by hand.
    if order.status != "open" or order.amount_due == 0:
        return
    try:
        await rt.payments.charge_order(tenant_id, order.id)
    except InvalidRequest as exc:
        if exc.code != "no_payment_method":
            raise
    except Conflict:
        pass  # paid, or being paid, already


# --- changes -------------------------------------------------------------------------------


def quote_inputs(row: Any) -> tuple[Any, ...]:
    """What a quote (or a credit for unused time) depends on: if any of it changed since the
    row was read, the quote is stale."""
    return (
        row.status,
        row.plan_id,
        row.quantity,
        row.current_period_start,
        row.pending_period_start,
        row.latest_order_id,
        row.proration_basis,
        row.proration_basis_from,
        row.pending_invoice_at,
    )


async def _invoice_key(uow: UnitOfWork, row: Any, at: datetime) -> datetime:
    """The period start the prorations of an `always_invoice` change are billed at, which also
    keys their order: the change's instant, or a microsecond after the current period's order
    or an earlier change's order if one holds that instant already (on a stopped test clock)."""
    start = row.current_period_start
    last = await repo.last_billed_item_start(uow, row.tenant_id, row.id, start)
    return max(at, max(start, last or start) + _TICK)


def _item_rows(
    row: Any, lines: Sequence[ChangePreviewLine], at: datetime, billed_at: datetime | None
) -> list[dict[str, Any]]:
    return [
        {
            "id": new_id("ii"),
            "tenant_id": row.tenant_id,
            "subscription_id": row.id,
            "description": line.description,
            "amount": line.amount,
            "currency": row.currency,
            "period_start": line.period_start,
            "period_end": line.period_end,
            "created": at,
            "billed_period_start": billed_at,
        }
        for line in lines
    ]


async def _save(uow: UnitOfWork, rt: Runtime, row: Any, values: dict[str, Any]) -> Subscription:
    await repo.update(
        uow, subscriptions, row.tenant_id, row.id, {**values, "updated": rt.clock.now()}
    )
    subscription = repo.to_subscription(await repo.get_subscription(uow, row.tenant_id, row.id))
    await OUTBOX.record(
        uow,
        row.tenant_id,
        "subscription.updated",
        subscription.model_dump(mode="json"),
        rt.clock.now(),
    )
    return subscription


async def preview_change(
    rt: Runtime, tenant_id: str, subscription_id: str, params: SubscriptionChange
) -> ChangePreview:
    """The lines `change_subscription` would make with these parameters now, changing nothing."""
    change = await change_quotes.check_change(rt, tenant_id, subscription_id, params)
    quote = await change_quotes.quote_change(rt, change, params)
    return ChangePreview(
        subscription_id=subscription_id,
        plan_id=change.plan.id,
        quantity=change.quantity,
        proration_behavior=params.proration_behavior,
        effective=params.effective,
        proration_date=change.at,
        currency=change.row.currency,
        lines=quote.lines,
        total=sum(line.amount for line in quote.lines),
    )


async def change_subscription(
    rt: Runtime, tenant_id: str, subscription_id: str, params: SubscriptionChange
) -> Subscription:
    """Change a subscription's plan and/or quantity now, prorated as `proration_behavior`
    says, or at the end of its period (replacing a change scheduled before).

    The new plan must be the tenant's, active, and of the subscription's currency and (after a
    trial) billing interval. A trialing subscription changes without proration.
    """
    # An `always_invoice` change that a dead process left unsettled is settled first: its
    # items must not be taken for this change's.
    await settle_pending_invoice(rt, tenant_id, subscription_id)
    change = await change_quotes.check_change(rt, tenant_id, subscription_id, params)
    quote = await change_quotes.quote_change(rt, change, params)
    row, at = change.row, change.at
    invoice_now = params.proration_behavior == "always_invoice" and bool(quote.lines)
    async with rt.uow() as uow:
        current = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        if current is None or quote_inputs(current) != quote_inputs(row):
            raise Conflict("the subscription changed meanwhile; try again")
        values: dict[str, Any]
        if params.effective == "period_end":
            values = {"pending_change": {"plan_id": change.plan.id, "quantity": change.quantity}}
        else:
            values = {
                "plan_id": change.plan.id,
                "quantity": change.quantity,
                "proration_basis": quote.basis,
                "proration_basis_from": quote.basis_from,
            }
            billed_at = await _invoice_key(uow, current, at) if invoice_now else None
            if invoice_now:
                values["pending_invoice_at"] = billed_at
            await repo.insert_pending_items(uow, _item_rows(row, quote.lines, at, billed_at))
        subscription = await _save(uow, rt, current, values)
        await uow.commit()
    if invoice_now:
        await settle_pending_invoice(rt, tenant_id, subscription_id)
    return subscription


async def cancel_pending_change(rt: Runtime, tenant_id: str, subscription_id: str) -> Subscription:
    """Drop the change scheduled for the end of the period; Conflict when there is none."""
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id, for_update=True)
        if row is None:
            raise NotFound(f"no such subscription: {subscription_id}", param="subscription_id")
        if row.pending_change is None:
            raise Conflict("the subscription has no scheduled change")
        subscription = await _save(uow, rt, row, {"pending_change": None})
        await uow.commit()
    return subscription
