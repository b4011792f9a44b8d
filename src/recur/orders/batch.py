"""Orders in batches, for the bill run: a batch of renewals is a few statements, not thousands.

`create_subscription_orders` makes the orders of many subscription periods in one transaction:
the orders, their lines, their numbers (a range taken from the tenant's counter), their ledger
lines and their events. Idempotent by (subscription, period start): the orders that exist are
returned as they are, and when a concurrent run made one of the others meanwhile, the whole
transaction rolls back (so no order number is lost) and the batch looks again.

`apply_payments` is the batch form of `service.apply_payment`, for the payment events a batch of
charges makes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.customers.schemas import CreditRequest
from recur.kit import ledger
from recur.kit.clock import ensure_utc
from recur.kit.ids import new_id
from recur.orders import repository as repo
from recur.orders import service
from recur.orders.schemas import Order, SubscriptionOrderDraft
from recur.orders.tables import ledger as order_ledger
from recur.orders.tables import order_lines, orders

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.kit.events import Event
    from recur.runtime import Runtime

_ATTEMPTS = 5

Key = tuple[str, datetime]


async def create_subscription_orders(
    rt: Runtime, tenant_id: str, drafts: Sequence[SubscriptionOrderDraft]
) -> list[Order]:
    """The orders of many subscription periods, made once each, finalized, and paid from the
    customers' credit where they have some. In the order of `drafts`."""
    keyed = {(d.subscription_id, ensure_utc(d.period_start)): d for d in drafts}
    for attempt in range(_ATTEMPTS):
        # First as if none existed (the common case: a bill run's first pass at its periods),
        # with no lookup; when some did exist, everything rolls back and they are looked up.
        made = await _create_missing(rt, tenant_id, keyed, look_up=attempt > 0)
        if made is not None:
            break
    else:  # pragma: no cover - five concurrent runs in a row making the same periods
        raise RuntimeError("orders of this batch keep being made concurrently")
    async with rt.uow() as uow:
        existing = await repo.by_periods(uow, tenant_id, [k for k in keyed if k not in made])
        lines = await repo.lines_of(uow, tenant_id, [row.id for row in existing.values()])
    found = {key: repo.to_order(row, lines[row.id]) for key, row in existing.items()}
    by_key = {**found, **made}
    paid_by_credit = await apply_customer_credits(rt, tenant_id, list(by_key.values()))
    return [paid_by_credit.get(by_key[key].id, by_key[key]) for key in keyed]


async def _create_missing(
    rt: Runtime, tenant_id: str, keyed: dict[Key, SubscriptionOrderDraft], *, look_up: bool
) -> dict[Key, Order] | None:
    """Make the orders of the periods that have none (all of them, unless `look_up`); None
    when one of them existed after all (everything of ours rolled back)."""
    now = rt.clock.now()
    async with rt.uow() as uow:
        existing = await repo.by_periods(uow, tenant_id, list(keyed)) if look_up else {}
        missing = [(key, draft) for key, draft in keyed.items() if key not in existing]
        if not missing:
            return {}
        numbers = await repo.next_order_numbers(uow, tenant_id, len(missing))
        order_rows: list[dict[str, Any]] = []
        line_rows: list[dict[str, Any]] = []
        for (key, draft), number in zip(missing, numbers, strict=True):
            order_row, lines = _finalized_rows(tenant_id, draft, key, number, now)
            order_rows.append(order_row)
            line_rows.extend(lines)
        if len(await repo.insert_many_if_absent(uow, order_rows)) != len(order_rows):
            return None
        await uow.insert_rows(order_lines, line_rows)
        lines_by_order: dict[str, list[Any]] = {row["id"]: [] for row in order_rows}
        for line in line_rows:
            lines_by_order[line["order_id"]].append(SimpleNamespace(**line))
        made = {
            key: repo.to_order(SimpleNamespace(**row), lines_by_order[row["id"]])
            for (key, _), row in zip(missing, order_rows, strict=True)
        }
        await ledger.post_many(
            uow, order_ledger, [service.finalized_entry(tenant_id, o) for o in made.values()], now
        )
        events = [(tenant_id, "order.finalized", o.model_dump(mode="json")) for o in made.values()]
        events += [
            (tenant_id, "order.paid", o.model_dump(mode="json"))
            for o in made.values()
            if o.status == "paid"
        ]
        await service.OUTBOX.record_many(uow, events, now)
        await uow.commit()
    return made


def _finalized_rows(
    tenant_id: str, draft: SubscriptionOrderDraft, key: Key, number: int, now: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rows of one period's order, numbered and open (paid at once if nothing is due)."""
    currency = service.check_currency(draft.currency)
    totals = service.order_totals(draft.lines, draft.discount, draft.tax_rates)
    order_id = new_id("ord")
    nothing_due = repo.amount_due("open", totals.total, 0) == 0
    row = {
        "id": order_id,
        "tenant_id": tenant_id,
        "customer_id": draft.customer_id,
        "subscription_id": draft.subscription_id,
        "number": number,
        "status": "paid" if nothing_due else "open",
        "currency": currency,
        "subtotal": totals.subtotal,
        **service.adjustment_values(totals, draft.discount, draft.tax_rates),
        "total": totals.total,
        "amount_paid": 0,
        "credit_applied": 0,
        "period_start": key[1],
        "period_end": ensure_utc(draft.period_end),
        "description": draft.description,
        "created": now,
        "finalized_at": now,
        "paid_at": now if nothing_due else None,
        "voided_at": None,
        "marked_uncollectible_at": None,
        "updated": now,
    }
    lines = service.line_rows(
        tenant_id,
        order_id,
        currency,
        "subscription",
        draft.lines,
        totals,
        (key[1], ensure_utc(draft.period_end)),
    )
    return row, lines


async def apply_customer_credits(
    rt: Runtime, tenant_id: str, batch: Sequence[Order]
) -> dict[str, Order]:
    """Pay open orders from their customers' credit, with one call to customers for the
    batch; the orders credit paid something on, by id."""
    wanted = [o for o in batch if o.status == "open" and o.amount_due > 0 and not o.credit_applied]
    if not wanted:
        return {}
    applied = await rt.customers.apply_credits(
        tenant_id,
        [CreditRequest(o.customer_id, o.id, o.currency, o.amount_due) for o in wanted],
    )
    changed = {}
    for order in wanted:
        if applied.get(order.id, 0) > 0:
            changed[order.id] = await service.record_credit_applied(
                rt, tenant_id, order, applied[order.id]
            )
    return changed


async def get_many(rt: Runtime, tenant_id: str, order_ids: Sequence[str]) -> dict[str, Order]:
    """The tenant's orders of these ids that exist, by id."""
    async with rt.uow() as uow:
        rows = await repo.get_many(uow, tenant_id, order_ids)
        lines = await repo.lines_of(uow, tenant_id, [row.id for row in rows])
    return {row.id: repo.to_order(row, lines[row.id]) for row in rows}


async def apply_payments(uow: UnitOfWork, events: list[Event], now: datetime) -> None:
    """Count many succeeded payments towards their orders, in the event bus's transaction.

    The plain case (an open order of the payment's currency, paid in full by it, once) is
    done in a few statements for all; anything else goes through `service.apply_payment`.
    """
    plain: list[tuple[str, dict[str, Any], Any]] = []
    rest: list[Event] = []
    rows = {}
    for tenant_id in {event.tenant_id for event in events}:
        ids = [e.payload.get("order_id") for e in events if e.tenant_id == tenant_id]
        locked = await repo.get_many(uow, tenant_id, [i for i in ids if i], for_update=True)
        rows.update({(tenant_id, row.id): row for row in locked})
    seen: set[tuple[str, str]] = set()
    for event in events:
        payment = event.payload
        key = (event.tenant_id, payment.get("order_id") or "")
        row = rows.get(key)
        if (
            row is not None
            and key not in seen
            and row.status == "open"
            and row.amount_paid == 0
            and payment.get("currency") == row.currency
            and int(payment["amount"]) == row.total - row.credit_applied
        ):
            seen.add(key)
            plain.append((event.tenant_id, payment, row))
        else:
            rest.append(event)
    if plain:
        await uow.execute(
            sa.update(orders)
            .where(orders.c.id == sa.bindparam("_id"))
            .values(amount_paid=sa.bindparam("_paid"), status="paid", paid_at=now, updated=now),
            [{"_id": row.id, "_paid": int(payment["amount"])} for _, payment, row in plain],
        )
        # The orders as just written, from the rows locked above: no second read.
        entries = []
        changed: list[tuple[str, str, dict[str, Any]]] = []
        for tenant_id in {t for t, _, _ in plain}:
            ours = [(payment, row) for t, payment, row in plain if t == tenant_id]
            lines = await repo.lines_of(uow, tenant_id, [row.id for _, row in ours])
            for payment, row in ours:
                paid_row = SimpleNamespace(
                    **{
                        **row._mapping,
                        "amount_paid": int(payment["amount"]),
                        "status": "paid",
                        "paid_at": now,
                        "updated": now,
                    }
                )
                order = repo.to_order(paid_row, lines[row.id])
                entries.append(service.payment_applied_entry(tenant_id, order, order.amount_paid))
                changed.append((tenant_id, "order.paid", order.model_dump(mode="json")))
        await ledger.post_many(uow, order_ledger, entries, now)
        await service.OUTBOX.record_many(uow, changed, now)
    for event in rest:
        await service.apply_payment(uow, event.tenant_id, event.payload, now)
