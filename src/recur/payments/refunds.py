"""Refunds: giving back all or part of a succeeded payment through its gateway.

A refund goes through the gateway that took the payment, with the tenant's credentials for it,
and carries its own id as idempotency key. The gateway's answer settles it: `succeeded` (with
its ledger lines and events) or `failed` (the amount set aside is given back). When the outcome
is unknown (a timeout, or a gateway that settles refunds later by design, as Adyen does), the
refund stays `pending`, the amount still set aside, and the gateway's webhook settles it
(`settle_refund`, from `webhooks`). A refund is settled once: only a pending one moves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from recur.kit import ledger
from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.pagination import Page, to_page
from recur.payments import repository as repo
from recur.payments.checks import _check_filters, _check_id
from recur.payments.gateways.base import (
    GatewayOutcomeUnknown,
    GatewayRetriableError,
    RefundResult,
)
from recur.payments.schemas import Payment, Refund, RefundCreate
from recur.payments.service import OUTBOX, get_payment
from recur.payments.tables import ledger as payments_ledger
from recur.payments.tenant_gateways import tenant_gateway

if TYPE_CHECKING:
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments")


def _refund_event(refund: Refund, payment: Payment) -> dict[str, Any]:
    return {
        **refund.model_dump(mode="json"),
        "customer_id": payment.customer_id,
        "order_id": payment.order_id,
    }


async def create_refund(rt: Runtime, tenant_id: str, params: RefundCreate) -> Refund:
    """Give back all that is left of a succeeded payment, or `amount` of it.

    The amount is set aside on the payment (row locked) and the refund written `pending` in one
    transaction, before the gateway is asked: two refunds at once can never give back more than
    was paid. The gateway's answer settles the refund in a second transaction; without an
    answer it stays pending for the gateway's webhook.
    """
    payment = await get_payment(rt, tenant_id, params.payment_id)
    # Built first: a gateway the tenant cannot use any more refuses before anything is written.
    gateway = await tenant_gateway(rt, tenant_id, payment.gateway)
    try:
        now = rt.clock.now()
        refund_id = new_id("re")
        async with rt.uow() as uow:
            row = await repo.get_payment(uow, tenant_id, payment.id, for_update=True)
            if row.status != "succeeded":
                raise Conflict(
                    f"only a succeeded payment can be refunded; this one is {row.status}",
                    param="payment_id",
                    code="payment_not_succeeded",
                )
            if row.dispute_status in ("open", "lost"):
                # The gateway has taken the money back, or is holding it: nothing to refund.
                raise Conflict(
                    f"the payment's dispute is {row.dispute_status}: it cannot be refunded",
                    param="payment_id",
                    code="payment_disputed",
                )
            left = row.amount - row.amount_refunded
            if left <= 0:
                raise Conflict(
                    "the payment is fully refunded",
                    param="payment_id",
                    code="charge_already_refunded",
                )
            amount = params.amount if params.amount is not None else left
            if amount > left:
                raise InvalidRequest(
                    f"only {left} is left to refund", param="amount", code="amount_too_large"
                )
            await repo.insert_refund(
                uow,
                {
                    "id": refund_id,
                    "tenant_id": tenant_id,
                    "payment_id": row.id,
                    "amount": amount,
                    "currency": row.currency,
                    "status": "pending",
                    "reason": params.reason,
                    "created": now,
                },
            )
            await repo.add_refunded(uow, tenant_id, row.id, amount, now)
            await uow.commit()

        # Outside any transaction: a slow gateway holds no lock.
        try:
            result = await gateway.refund(
                row.gateway_reference or "", amount, row.currency, idempotency_key=refund_id
            )
        except GatewayOutcomeUnknown as exc:
            # Maybe refunded, or to be decided later: its webhook says which.
            log.info("refund %s pending at %s: %s", refund_id, gateway.name, exc.code)
            return await _keep_pending(rt, tenant_id, refund_id, exc.reference)
        except GatewayRetriableError as exc:
            # Certainly not done: it fails, and the amount can be refunded again.
            result = RefundResult(False, None, exc.code, exc.message)
    finally:
        await gateway.aclose()
    settled = await settle_refund(rt, tenant_id, refund_id, result)
    return settled or await get_refund(rt, tenant_id, refund_id)


async def _keep_pending(
    rt: Runtime, tenant_id: str, refund_id: str, reference: str | None
) -> Refund:
    async with rt.uow() as uow:
        if reference is not None:
            await repo.update_refund(uow, tenant_id, refund_id, {"gateway_reference": reference})
        refund = repo.to_refund(await repo.get_refund(uow, tenant_id, refund_id))
        await uow.commit()
    return refund


async def settle_refund(
    rt: Runtime, tenant_id: str, refund_id: str, result: RefundResult
) -> Refund | None:
    """Write the gateway's answer on a pending refund: `succeeded` with its ledger lines and
    events, or `failed`, giving back the amount set aside. None when the refund was not
    pending any more (settled meanwhile): nothing is written twice."""
    async with rt.uow() as uow:
        found = await repo.get_refund(uow, tenant_id, refund_id)
        if found is None:
            return None
        # The payment's row lock orders this with new refunds and disputes of the payment.
        await repo.get_payment(uow, tenant_id, found.payment_id, for_update=True)
        pending = await repo.get_refund(uow, tenant_id, refund_id)
        if pending.status != "pending":
            return None
        status = "succeeded" if result.succeeded else "failed"
        values: dict[str, Any] = {
            "status": status,
            "failure_code": result.failure_code,
            "failure_message": result.failure_message,
        }
        if result.reference is not None:
            values["gateway_reference"] = result.reference
        await repo.update_refund(uow, tenant_id, refund_id, values)
        now = rt.clock.now()
        if not result.succeeded:
            await repo.add_refunded(uow, tenant_id, pending.payment_id, -pending.amount, now)
        refund = repo.to_refund(await repo.get_refund(uow, tenant_id, refund_id))
        payment = repo.to_payment(await repo.get_payment(uow, tenant_id, pending.payment_id))
        if result.succeeded:
            # Money back out of the gateway: what was taken in is given up.
            await ledger.post(
                uow,
                payments_ledger,
                tenant_id=tenant_id,
                kind="refund",
                source_id=refund.id,
                customer_id=payment.customer_id,
                currency=refund.currency,
                lines=[
                    ledger.Line("refunds", debit=refund.amount),
                    ledger.Line(f"gateway_cash:{payment.gateway}", credit=refund.amount),
                ],
                at=now,
            )
            await OUTBOX.record(
                uow, tenant_id, "refund.created", _refund_event(refund, payment), now
            )
            await OUTBOX.record(
                uow, tenant_id, "payment.refunded", payment.model_dump(mode="json"), now
            )
        else:
            await OUTBOX.record(
                uow, tenant_id, "refund.failed", _refund_event(refund, payment), now
            )
        await uow.commit()
    if not result.succeeded:
        log.warning("refund %s failed at the gateway: %s", refund_id, result.failure_code)
    return refund


async def get_refund(rt: Runtime, tenant_id: str, refund_id: str) -> Refund:
    """One refund of the tenant."""
    _check_id(refund_id, "refund_id", "refund")
    async with rt.uow() as uow:
        row = await repo.get_refund(uow, tenant_id, refund_id)
    if row is None:
        raise NotFound(f"no such refund: {refund_id}", param="refund_id")
    return repo.to_refund(row)


async def list_refunds(
    rt: Runtime,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    payment_id: str | None = None,
) -> Page[Refund]:
    """The tenant's refunds, newest first, of one payment when given."""
    _check_filters(starting_after=starting_after, payment_id=payment_id)
    async with rt.uow() as uow:
        rows, has_more = await repo.refunds_page(uow, tenant_id, limit, starting_after, payment_id)
    return to_page(rows, has_more, repo.to_refund)
