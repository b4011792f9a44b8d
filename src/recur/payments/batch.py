"""Charging orders in batches, for the bill run.

The same steps as one charge (see `service` and `attempts`), each done for the whole batch at
once: one route per payment from the tenant's rules, read once; the payments are written
`pending` in one transaction (the partial unique index still refuses a second pending or
succeeded payment of an order: those orders are reported `in_progress` and left alone); then the
attempts go in rounds, each round's gateway calls concurrent and outside any transaction, each
charge with its attempt's idempotency key; the outcomes, their ledger lines and their events
are written in one transaction per round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.kit import ledger
from recur.kit.db import fetch_by_ids, insert_ignoring_conflicts
from recur.kit.ids import new_id
from recur.payments import attempts as charging
from recur.payments import repository as repo
from recur.payments.gateways.base import ChargeResult
from recur.payments.schemas import OrderCharge, Payment
from recur.payments.tables import (
    OUTBOX,
    payment_attempts,
    payment_dunning,
    payment_methods,
    payments,
)
from recur.payments.tables import ledger as payments_ledger

if TYPE_CHECKING:
    from recur.runtime import Runtime

# A charge pending longer than this with its call under way was left by a process that died
# during it: every adapter's call times out long before.
STRANDED_AFTER = timedelta(seconds=60)


async def charge_orders(rt: Runtime, tenant_id: str, order_ids: Sequence[str]) -> list[OrderCharge]:
    """Charge what is due on each order with its customer's default payment method.

    One answer per order, in the order given: `succeeded` or `failed` with the payment;
    `no_payment_method`; `paid` (nothing left to pay); `not_payable` (no such open order);
    `in_progress` (another payment of it is pending or succeeded, or this one's outcome is not
    known yet: the reconciler settles it). Subscription orders that cannot be paid (a decline,
    no card, no gateway) go to dunning.
    """
    # Imported here: both charge through this module.
    from recur.payments import service
    from recur.payments.reconcile import reconcile_orders

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
        # An order dunning is retrying is charged on dunning's schedule only: a bill run
        # looking again at its period (a rerun, or a charge whose outcome came late) learns
        # that it failed, and charges nothing.
        dunned = await _in_dunning(uow, tenant_id, [o.id for o in payable])
        for order_id in dunned:
            answers[order_id] = OrderCharge(order_id=order_id, outcome="failed")
        payable = [o for o in payable if o.id not in dunned]
        methods = await _usable_methods(
            uow,
            tenant_id,
            [c.default_payment_method_id for c in customers.values()],
        )
        tokens = await charging.tokens_of(uow, tenant_id, list(methods))
    router = await charging.load_router(rt, tenant_id) if payable else None
    now = rt.clock.now()
    pending: list[dict[str, Any]] = []
    candidates: dict[str, charging.Candidate] = {}
    for order in payable:
        customer = customers.get(order.customer_id)
        method = methods.get(customer.default_payment_method_id or "") if customer else None
        if method is None or method.customer_id != order.customer_id:
            answers[order.id] = OrderCharge(order_id=order.id, outcome="no_payment_method")
            continue
        assert router is not None
        payment_id = new_id("pay")
        candidate, route = charging.candidate(
            router, payment_id, order.amount_due, order.currency, method.brand, tokens[method.id]
        )
        candidates[payment_id] = candidate
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
                "gateway": route.gateways[0] if route.gateways else method.gateway,
                "gateway_reference": None,
                "description": None,
                "routing_reason": route.reason,
                "routing_rule_id": route.rule_id,
                "created": now,
                "updated": now,
            }
        )
    inserted = await insert_pending(rt, pending)
    for row in pending:
        if row["id"] not in inserted:
            answers[row["order_id"]] = OrderCharge(order_id=row["order_id"], outcome="in_progress")
    # A payment pending for longer than any charge takes was left by a process that died
    # while a gateway charged it, or its outcome is still unknown: the reconciler asks the
    # gateway by the attempt's key and settles it (charging again only what never arrived).
    in_progress = [order_id for order_id, a in answers.items() if a.outcome == "in_progress"]
    settled = await reconcile_orders(rt, tenant_id, in_progress, STRANDED_AFTER)
    settled.update(
        await charging.run_attempts(rt, tenant_id, [candidates[i] for i in sorted(inserted)])
    )
    for payment in settled.values():
        assert payment.order_id is not None
        answers[payment.order_id] = OrderCharge(
            order_id=payment.order_id,
            outcome="succeeded" if payment.status == "succeeded" else "failed",
            payment=payment,
        )
    for row in pending:
        if row["id"] in inserted and row["id"] not in settled:
            # Its outcome is unknown: the payment stays pending until the reconciler knows.
            answers[row["order_id"]] = OrderCharge(order_id=row["order_id"], outcome="in_progress")
    # Dunning retries what could not be charged (one at a time: declines are the exception).
    # (Those the reconciler settled above were sent there already: asking again does nothing.)
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


async def dun_failed(rt: Runtime, tenant_id: str, settled: Iterable[Payment]) -> None:
    """Payments settled `failed` after their charge was answered (by the reconciler, or a
    gateway's webhook): those of a subscription's order still open go to dunning, as a
    decline answered at once does. Asking for an order dunning has already does nothing."""
    from recur.payments import service  # imported here: it charges through this module

    failed = [p for p in settled if p.status == "failed" and p.order_id is not None]
    if not failed:
        return
    orders = await rt.orders.get_many(tenant_id, [p.order_id for p in failed if p.order_id])
    for payment in failed:
        order = orders.get(payment.order_id or "")
        if order is None or order.subscription_id is None or order.status != "open":
            continue
        await service.start_dunning(
            rt,
            tenant_id,
            order.id,
            order.subscription_id,
            order.customer_id,
            payment.payment_method_id,
            payment.created,
        )


async def _in_dunning(uow: Any, tenant_id: str, order_ids: list[str]) -> set[str]:
    if not order_ids:
        return set()
    rows = await uow.fetch_all(
        sa.select(payment_dunning.c.order_id).where(
            payment_dunning.c.tenant_id == tenant_id,
            payment_dunning.c.order_id.in_(order_ids),
            payment_dunning.c.status == "open",
        )
    )
    return {row.order_id for row in rows}


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


async def settle(
    rt: Runtime, tenant_id: str, results: dict[str, ChargeResult]
) -> dict[str, Payment]:
    """Write the gateways' answers on pending payments, with their ledger lines and events,
    in one transaction; the settled payments by id.

    Each answer is also the outcome of the payment's live attempt (the one whose outcome was
    null or unknown), and the payment's gateway becomes that attempt's: the one that took it.
    A payment with no live attempt (no gateway could take it) keeps its gateway."""
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
        live = await charging.live_attempts(uow, list(results))
        if live:
            await uow.execute(
                sa.update(payment_attempts)
                .where(payment_attempts.c.id == sa.bindparam("_id"))
                .values(
                    outcome=sa.bindparam("_outcome"),
                    gateway_reference=sa.bindparam("_reference"),
                    failure_code=sa.bindparam("_code"),
                    failure_message=sa.bindparam("_message"),
                    settled_at=now,
                ),
                [
                    {
                        "_id": attempt.id,
                        "_outcome": charging.SUCCEEDED if r.succeeded else charging.DECLINED,
                        "_reference": r.reference,
                        "_code": None if r.succeeded else r.failure_code,
                        "_message": None if r.succeeded else r.failure_message,
                    }
                    for payment_id, attempt in live.items()
                    for r in [results[payment_id]]
                ],
            )
        await uow.execute(
            sa.update(payments)
            .where(
                payments.c.tenant_id == tenant_id,
                payments.c.id == sa.bindparam("_id"),
                payments.c.status == "pending",
            )
            .values(
                status=sa.bindparam("_status"),
                # The live attempt's gateway took it; without one, the payment keeps its own.
                gateway=sa.func.coalesce(
                    sa.bindparam("_gateway", type_=sa.String), payments.c.gateway
                ),
                gateway_reference=sa.bindparam("_reference"),
                failure_code=sa.bindparam("_code"),
                failure_message=sa.bindparam("_message"),
                updated=now,
            ),
            [
                {
                    "_id": payment_id,
                    "_gateway": live[payment_id].gateway if payment_id in live else None,
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
