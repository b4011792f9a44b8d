"""Charging orders in batches, for the bill run.

The same three steps as one charge (see `service`), each done for the whole batch at once: the
payments are written `pending` in one transaction (the partial unique index still refuses a
second pending or succeeded payment of an order: those orders are reported `in_progress` and
left alone); the gateways are called outside any transaction, concurrently, each charge with its
payment id as idempotency key; the outcomes, their ledger lines and their events are written in
one transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.kit import ledger
from recur.kit.db import fetch_by_ids, insert_ignoring_conflicts
from recur.kit.ids import new_id
from recur.payments import repository as repo
from recur.payments.gateways import gateway_for
from recur.payments.gateways.base import ChargeResult
from recur.payments.schemas import OrderCharge, Payment
from recur.payments.tables import OUTBOX, payment_methods, payments
from recur.payments.tables import ledger as payments_ledger

if TYPE_CHECKING:
    from recur.runtime import Runtime

# A charge pending longer than this was left by a process that died during it (a gateway call
# times out long before).
STRANDED_AFTER = timedelta(seconds=60)
# Gateway calls under way at once; a real gateway answers in tens of milliseconds.
GATEWAY_CONCURRENCY = 64


async def charge_orders(rt: Runtime, tenant_id: str, order_ids: Sequence[str]) -> list[OrderCharge]:
    """Charge what is due on each order with its customer's default payment method.

    One answer per order, in the order given: `succeeded` or `failed` with the payment;
    `no_payment_method`; `paid` (nothing left to pay); `not_payable` (no such open order);
    `in_progress` (another payment of it is pending or succeeded). Subscription orders that
    cannot be paid (a decline, no card) go to dunning.
    """
    from recur.payments import service  # service charges one payment through this module

    orders = await rt.orders.get_many(tenant_id, order_ids)
    answers: dict[str, OrderCharge] = {}
    payable = []
    for order_id in order_ids:
        order = orders.get(order_id)
        if order is None or order.status not in ("open", "paid"):
            answers[order_id] = OrderCharge(order_id=order_id, outcome="not_payable")
        elif order.status == "paid" or order.amount_due <= 0:
            answers[order_id] = OrderCharge(order_id=order_id, outcome="paid")
        else:
            payable.append(order)
    customers = await rt.customers.get_many(tenant_id, [o.customer_id for o in payable])
    async with rt.uow() as uow:
        methods = await _usable_methods(
            uow,
            tenant_id,
            [c.default_payment_method_id for c in customers.values()],
        )
    now = rt.clock.now()
    pending: list[dict[str, Any]] = []
    tokens: dict[str, tuple[str, str]] = {}
    for order in payable:
        customer = customers.get(order.customer_id)
        method = methods.get(customer.default_payment_method_id or "") if customer else None
        if method is None or method.customer_id != order.customer_id:
            answers[order.id] = OrderCharge(order_id=order.id, outcome="no_payment_method")
            continue
        payment_id = new_id("pay")
        tokens[payment_id] = (method.gateway, method.gateway_token)
        pending.append(
            {
                "id": payment_id,
                "tenant_id": tenant_id,
                "customer_id": order.customer_id,
                "order_id": order.id,
                "amount": order.amount_due,
                "currency": order.currency,
                "status": "pending",
                "failure_code": None,
                "failure_message": None,
                "amount_refunded": 0,
                "payment_method_id": method.id,
                "gateway": method.gateway,
                "gateway_reference": None,
                "description": None,
                "created": now,
                "updated": now,
            }
        )
    inserted = await insert_pending(rt, pending)
    for row in pending:
        if row["id"] not in inserted:
            answers[row["order_id"]] = OrderCharge(order_id=row["order_id"], outcome="in_progress")
    attempts = [(row, *tokens[row["id"]]) for row in pending if row["id"] in inserted]
    # A payment pending for longer than any charge takes was left by a process that died
    # while the gateway charged it: asked again with the same idempotency key, the gateway
    # answers what it did (charging once), and the payment is settled with that answer.
    stranded = [order_id for order_id, a in answers.items() if a.outcome == "in_progress"]
    attempts += await _stranded_attempts(rt, tenant_id, stranded, now - STRANDED_AFTER)
    results = await call_gateways(rt, attempts)
    settled = await settle(rt, tenant_id, results)
    for payment in settled.values():
        assert payment.order_id is not None
        answers[payment.order_id] = OrderCharge(
            order_id=payment.order_id,
            outcome="succeeded" if payment.status == "succeeded" else "failed",
            payment=payment,
        )
    # Dunning retries what could not be charged (one at a time: declines are the exception).
    for order in payable:
        answer = answers[order.id]
        if order.subscription_id and answer.outcome in ("failed", "no_payment_method"):
            failed = answer.payment
            await service.start_dunning(
                rt,
                tenant_id,
                order.id,
                order.subscription_id,
                order.customer_id,
                failed.payment_method_id if failed else None,
                failed.created if failed else None,
            )
    return [answers[order_id] for order_id in order_ids]


async def _stranded_attempts(
    rt: Runtime, tenant_id: str, order_ids: list[str], before: datetime
) -> list[tuple[dict[str, Any], str, str]]:
    """The orders' payments still pending since before `before`, with their card's token."""
    if not order_ids:
        return []
    async with rt.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(payments, payment_methods.c.gateway_token)
            .join(payment_methods, payment_methods.c.id == payments.c.payment_method_id)
            .where(
                payments.c.tenant_id == tenant_id,
                payments.c.order_id.in_(order_ids),
                payments.c.status == "pending",
                payments.c.updated < before,
            )
        )
    return [(dict(row._mapping), row.gateway, row.gateway_token) for row in rows]


async def _usable_methods(uow: Any, tenant_id: str, method_ids: Sequence[str | None]) -> dict:
    ids = {i for i in method_ids if i}
    if not ids:
        return {}
    rows = await fetch_by_ids(
        uow, payment_methods, tenant_id, ids, payment_methods.c.detached_at.is_(None)
    )
    return {row.id: row for row in rows}


async def insert_pending(rt: Runtime, rows: list[dict[str, Any]]) -> set[str]:
    """Write the payments `pending` and commit; the ids written (an order already paid or
    being paid gets none)."""
    inserted: set[str] = set()
    if not rows:
        return inserted
    async with rt.uow() as uow:
        # Executed for many rows: SQLAlchemy batches them into multi-row statements.
        stmt = insert_ignoring_conflicts(uow.conn, payments).returning(payments.c.id)
        inserted.update((await uow.execute(stmt, rows)).scalars())
        await uow.commit()
    return inserted


async def call_gateways(
    rt: Runtime, attempts: list[tuple[dict[str, Any], str, str]]
) -> dict[str, ChargeResult]:
    """Charge each (pending payment row, gateway, token), concurrently, outside any
    transaction: a slow gateway holds no lock. The payment id as idempotency key makes a
    retry after a crash charge once."""
    limit = asyncio.Semaphore(GATEWAY_CONCURRENCY)

    async def charge(row: dict[str, Any], gateway: str, token: str) -> ChargeResult:
        async with limit:
            return await gateway_for(rt, gateway).charge(
                token, row["amount"], row["currency"], idempotency_key=row["id"]
            )

    results = await asyncio.gather(*(charge(*attempt) for attempt in attempts))
    return {row["id"]: result for (row, _, _), result in zip(attempts, results, strict=True)}


async def settle(
    rt: Runtime, tenant_id: str, results: dict[str, ChargeResult]
) -> dict[str, Payment]:
    """Write the gateways' answers on pending payments, with their ledger lines and events,
    in one transaction; the settled payments by id."""
    if not results:
        return {}
    now = rt.clock.now()
    async with rt.uow() as uow:
        # Only what is still pending is ours to settle: a payment settled meanwhile (by a
        # reconciler, say) keeps its outcome, and its ledger lines and event are not repeated.
        still_pending = await repo.lock_pending(uow, tenant_id, list(results))
        results = {i: r for i, r in results.items() if i in still_pending}
        if not results:
            return {}
        await uow.execute(
            sa.update(payments)
            .where(
                payments.c.tenant_id == tenant_id,
                payments.c.id == sa.bindparam("_id"),
                payments.c.status == "pending",
            )
            .values(
                status=sa.bindparam("_status"),
                gateway_reference=sa.bindparam("_reference"),
                failure_code=sa.bindparam("_code"),
                failure_message=sa.bindparam("_message"),
                updated=now,
            ),
            [
                {
                    "_id": payment_id,
                    "_status": "succeeded" if result.succeeded else "failed",
                    "_reference": result.reference,
                    "_code": None if result.succeeded else result.failure_code,
                    "_message": None if result.succeeded else result.failure_message,
                }
                for payment_id, result in results.items()
            ],
        )
        rows = await repo.get_payments(uow, tenant_id, list(results))
        settled = {row.id: repo.to_payment(row) for row in rows}
        # Money at the gateway, owed on to whatever the payment pays for.
        entries = [
            ledger.Entry(
                tenant_id,
                "payment",
                p.id,
                p.customer_id,
                p.currency,
                [
                    ledger.Line(f"gateway_cash:{p.gateway}", debit=p.amount),
                    ledger.Line("payments_clearing", credit=p.amount),
                ],
            )
            for p in settled.values()
            if p.status == "succeeded"
        ]
        await ledger.post_many(uow, payments_ledger, entries, now)
        await OUTBOX.record_many(
            uow,
            [
                (tenant_id, f"payment.{p.status}", p.model_dump(mode="json"))
                for p in settled.values()
            ],
            now,
        )
        await uow.commit()
    return settled
