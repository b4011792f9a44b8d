"""The reconciler: pending payments whose outcome is not known are settled by asking the gateway.

A payment stays `pending` when its live attempt timed out or answered "maybe" (`unknown`), or
when the process charging it died with the call under way (outcome null, older than
`batch.STRANDED_AFTER`). The reconciler asks the attempt's gateway what became of the charge sent
with the attempt's idempotency key (`lookup_charge`, with the token, amount and currency sent):

| the gateway says | the reconciler                                                          |
|------------------|-------------------------------------------------------------------------|
| succeeded/failed | settles the payment, with its ledger lines and event (`batch.settle`)   |
| unknown, or      | leaves it for the next run: nothing is charged again until it is known  |
| cannot be asked  |                                                                         |
| not_found        | the charge never arrived: the attempt is closed (`retriable_error`,     |
|                  | `not_found`) and the payment goes on along its route with a new attempt |

Closing the live attempt is one conditional UPDATE, and attempt numbers are unique per payment,
so two reconcilers (or a reconciler and a bill run) never start two live attempts. A pending
payment with no live attempt at all (its process died between two attempts) goes on along its
route the same way once it is stranded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.kit.errors import Conflict
from recur.payments import attempts as charging
from recur.payments.batch import STRANDED_AFTER, dun_failed, settle
from recur.payments.credentials import credentials_cipher
from recur.payments.gateway_config import RoutedGateway
from recur.payments.gateways.base import ChargeResult, ChargeStatus, RefundResult
from recur.payments.gateways.manual import NAME as MANUAL
from recur.payments.refunds import settle_refund
from recur.payments.tables import payment_attempts, payment_methods, payments, refunds
from recur.payments.tenant_gateways import gateway_credentials, tenant_gateway

if TYPE_CHECKING:
    from recur.payments.schemas import Payment
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments")

# An unknown outcome is asked about after this: long enough for a gateway to finish
# processing, short enough that a customer is not left waiting.
UNKNOWN_AFTER = timedelta(seconds=5)
BATCH = 500
# How often the payments process runs a pass.
RECONCILE_EVERY_SECONDS = 10.0


@dataclass
class ReconcileResult:
    """What one pass did."""

    asked: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0  # never arrived: charged along the route again, under a new key
    left_pending: int = 0  # the gateway does not know yet, or could not be asked
    refunds_asked: int = 0
    refunds_succeeded: int = 0
    refunds_failed: int = 0  # refused, or never arrived: the amount can be refunded again

    @property
    def settled(self) -> int:
        """Payments and refunds this pass settled or charged again."""
        return (
            self.succeeded
            + self.failed
            + self.retried
            + self.refunds_succeeded
            + self.refunds_failed
        )

    def add(self, other: ReconcileResult) -> None:
        for name in (
            "asked",
            "succeeded",
            "failed",
            "retried",
            "left_pending",
            "refunds_asked",
            "refunds_succeeded",
            "refunds_failed",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


async def reconcile(
    rt: Runtime,
    *,
    tenant_id: str | None = None,
    unknown_after: timedelta = UNKNOWN_AFTER,
    stranded_after: timedelta = STRANDED_AFTER,
    limit: int = BATCH,
) -> ReconcileResult:
    """One pass over up to `limit` pending payments, oldest first, of every tenant (or one),
    and as many pending refunds. Manual payments wait for an operator's mark, which settles
    them: there is nothing to ask, and days of them waiting must not fill the pass."""
    now = rt.clock.now()
    stmt = (
        sa.select(payments.c.tenant_id, payments.c.id)
        .where(
            payments.c.status == "pending",
            payments.c.updated < now - unknown_after,
            payments.c.gateway != MANUAL,
        )
        .order_by(payments.c.updated)
        .limit(limit)
    )
    if tenant_id is not None:
        stmt = stmt.where(payments.c.tenant_id == tenant_id)
    async with rt.uow() as uow:
        rows = await uow.fetch_all(stmt)
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_tenant[row.tenant_id].append(row.id)
    result = ReconcileResult()
    for tenant, ids in by_tenant.items():
        outcome, _ = await _reconcile_payments(rt, tenant, ids, unknown_after, stranded_after)
        result.add(outcome)
    result.add(
        await _reconcile_refunds(
            rt,
            tenant_id=tenant_id,
            unknown_after=unknown_after,
            stranded_after=stranded_after,
            limit=limit,
        )
    )
    return result


async def _reconcile_refunds(
    rt: Runtime,
    *,
    tenant_id: str | None,
    unknown_after: timedelta,
    stranded_after: timedelta,
    limit: int,
) -> ReconcileResult:
    """Pending refunds, oldest first: each is asked about at the gateway that took its
    payment, by the refund's id (its idempotency key), and settled when the gateway knows. One
    the gateway never received fails once it is older than any call takes, so that its amount
    can be refunded again; one received but not decided stays pending for the next pass, or
    the gateway's webhook."""
    result = ReconcileResult()
    now = rt.clock.now()
    stmt = (
        sa.select(
            refunds.c.tenant_id,
            refunds.c.id,
            refunds.c.amount,
            refunds.c.currency,
            refunds.c.created,
            payments.c.gateway,
            payments.c.gateway_reference,
        )
        .join(payments, payments.c.id == refunds.c.payment_id)
        .where(refunds.c.status == "pending", refunds.c.created < now - unknown_after)
        .order_by(refunds.c.created)
        .limit(limit)
    )
    if tenant_id is not None:
        stmt = stmt.where(refunds.c.tenant_id == tenant_id)
    async with rt.uow() as uow:
        rows = await uow.fetch_all(stmt)
    for row in rows:
        result.refunds_asked += 1
        try:
            adapter = await tenant_gateway(rt, row.tenant_id, row.gateway)
        except Conflict as exc:
            # Not configured any more, or its credentials cannot be read with this process's
            # keys: asked again later.
            log.warning("refund %s cannot be asked about at %s: %s", row.id, row.gateway, exc)
            continue
        try:
            found = await adapter.lookup_refund(
                row.id,
                reference=row.gateway_reference or "",
                amount=row.amount,
                currency=row.currency,
            )
        except Exception as exc:  # retriable, or an answer that cannot be read: ask later
            log.warning("lookup of refund %s at %s failed: %s", row.id, row.gateway, exc)
            continue
        finally:
            await adapter.aclose()
        settled = found.result()
        if settled is None and found.status == ChargeStatus.NOT_FOUND:
            if row.created >= now - stranded_after:
                continue  # the call may still be under way
            settled = RefundResult(
                False,
                None,
                "not_found",
                "the gateway has no refund with this key: it never arrived",
            )
        if settled is None:
            continue
        refund = await settle_refund(rt, row.tenant_id, row.id, settled)
        if refund is not None:
            if refund.status == "succeeded":
                result.refunds_succeeded += 1
            else:
                result.refunds_failed += 1
    return result


async def reconcile_orders(
    rt: Runtime, tenant_id: str, order_ids: Sequence[str], stranded_after: timedelta
) -> dict[str, Payment]:
    """Reconcile the orders' pending payments that have waited `stranded_after` (a bill run
    meeting an order still being paid); the payments settled, by id."""
    if not order_ids:
        return {}
    async with rt.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(payments.c.id).where(
                payments.c.tenant_id == tenant_id,
                payments.c.order_id.in_(list(order_ids)),
                payments.c.status == "pending",
                payments.c.updated < rt.clock.now() - stranded_after,
            )
        )
    _, settled = await _reconcile_payments(
        rt, tenant_id, [row.id for row in rows], stranded_after, stranded_after
    )
    return settled


async def reconcile_payment(rt: Runtime, tenant_id: str, payment_id: str) -> None:
    """Settle one pending payment now, whatever its age: for a request carried out again after
    the process that ran it died, so that none of its calls can still be under way."""
    await _reconcile_payments(rt, tenant_id, [payment_id], timedelta(0), timedelta(0))


async def _reconcile_payments(
    rt: Runtime,
    tenant_id: str,
    payment_ids: list[str],
    unknown_after: timedelta,
    stranded_after: timedelta,
) -> tuple[ReconcileResult, dict[str, Payment]]:
    result = ReconcileResult()
    if not payment_ids:
        return result, {}
    now = rt.clock.now()
    async with rt.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(payments, payment_methods.c.brand)
            .outerjoin(payment_methods, payment_methods.c.id == payments.c.payment_method_id)
            .where(
                payments.c.tenant_id == tenant_id,
                payments.c.id.in_(payment_ids),
                payments.c.status == "pending",
            )
        )
        all_attempts = await uow.fetch_all(
            sa.select(payment_attempts)
            .where(payment_attempts.c.payment_id.in_(payment_ids))
            .order_by(payment_attempts.c.number)
        )
        method_ids = [r.payment_method_id for r in rows if r.payment_method_id]
        tokens = await charging.tokens_of(uow, tenant_id, method_ids)
        router = await charging.router_in(uow, credentials_cipher(rt.settings), tenant_id)
    tried: dict[str, list[Any]] = defaultdict(list)
    for attempt in all_attempts:
        tried[attempt.payment_id].append(attempt)

    lookups: list[tuple[Any, Any]] = []  # (payment row, live attempt)
    restart: list[Any] = []  # payment rows to charge along their route again
    for row in rows:
        history = tried[row.id]
        live = next((a for a in reversed(history) if a.outcome in charging.LIVE), None)
        if live is None:
            if row.updated < now - stranded_after:
                restart.append(row)
            continue
        if live.outcome is None and row.updated >= now - stranded_after:
            continue  # the call may still be under way in another process
        lookups.append((row, live))

    answers: dict[str, ChargeResult] = {}
    for row, live in lookups:
        result.asked += 1
        credentials = router.credentials.get(live.gateway)
        if credentials is None:
            # Disabled since it took the charge: no new payment goes there, but what it holds
            # is still asked about, as refunds and webhooks still reach it.
            credentials = await gateway_credentials(rt, tenant_id, live.gateway)
        if credentials is None or live.token is None:
            result.left_pending += 1  # the gateway cannot be asked now: asked again later
            continue
        adapter = charging.open_adapter(rt, RoutedGateway(live.gateway, credentials))
        try:
            found = await adapter.lookup_charge(
                live.idempotency_key, token=live.token, amount=row.amount, currency=row.currency
            )
        except Exception as exc:  # retriable, or an answer that cannot be read: ask later
            log.warning("lookup of %s at %s failed: %s", live.id, live.gateway, exc)
            result.left_pending += 1
            continue
        finally:
            await adapter.aclose()
        settled = found.result()
        if settled is not None:
            answers[row.id] = settled
        elif found.status == ChargeStatus.NOT_FOUND and await _close_never_arrived(
            rt, live.id, live.outcome
        ):
            restart.append(row)
        else:
            result.left_pending += 1

    settled_payments = await settle(rt, tenant_id, answers)
    for payment in settled_payments.values():
        if payment.status == "succeeded":
            result.succeeded += 1
        else:
            result.failed += 1

    candidates = []
    for row in restart:
        known = dict(tokens.get(row.payment_method_id or "", {}))
        for attempt in tried[row.id]:
            if attempt.token is not None:
                known.setdefault(attempt.gateway, attempt.token)
        numbers = [a.number for a in tried[row.id]]
        candidate, _ = charging.candidate(
            router, row.id, row.amount, row.currency, row.brand, known, max(numbers, default=0) + 1
        )
        candidates.append(candidate)
    result.retried += len(candidates)
    again = await charging.run_attempts(rt, tenant_id, candidates)
    for payment in again.values():
        if payment.status == "succeeded":
            result.succeeded += 1
        else:
            result.failed += 1
    result.left_pending += len(candidates) - len(again)
    settled_payments.update(again)
    await dun_failed(rt, tenant_id, settled_payments.values())
    return result, settled_payments


async def _close_never_arrived(rt: Runtime, attempt_id: str, outcome: str | None) -> bool:
    """Close a live attempt the gateway never received; False when someone else did first."""
    async with rt.uow() as uow:
        closed = await uow.execute(
            sa.update(payment_attempts)
            .where(
                payment_attempts.c.id == attempt_id,
                payment_attempts.c.outcome.is_(None)
                if outcome is None
                else payment_attempts.c.outcome == outcome,
            )
            .values(
                outcome=charging.RETRIABLE,
                failure_code="not_found",
                failure_message="the gateway has no charge with this key: it never arrived",
                settled_at=rt.clock.now(),
            )
        )
        await uow.commit()
    return bool(closed.rowcount == 1)


async def reconcile_all(rt: Runtime, *, tenant_id: str | None = None) -> ReconcileResult:
    """Passes until one settles and retries nothing more (what can be known now is known)."""
    total = ReconcileResult()
    while True:
        one = await reconcile(rt, tenant_id=tenant_id)
        total.add(one)
        if one.settled == 0:
            return total
