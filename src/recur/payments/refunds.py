"""Refunds: giving back all or part of a succeeded payment through its gateway."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from recur.kit import ledger
from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.pagination import Page, to_page
from recur.payments import repository as repo
from recur.payments.checks import _check_filters, _check_id
from recur.payments.gateways import gateway_for
from recur.payments.schemas import Payment, Refund, RefundCreate
from recur.payments.service import OUTBOX, get_payment
from recur.payments.tables import ledger as payments_ledger

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
    was paid. The gateway's answer settles the refund in a second transaction.
    """
    payment = await get_payment(rt, tenant_id, params.payment_id)
    gateway = gateway_for(rt, payment.gateway)
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

    result = await gateway.refund(
        row.gateway_reference, amount, row.currency, idempotency_key=refund_id
    )
    async with rt.uow() as uow:
        await repo.get_payment(uow, tenant_id, row.id, for_update=True)
        status = "succeeded" if result.succeeded else "failed"
        await repo.update_refund(
            uow, tenant_id, refund_id, {"status": status, "gateway_reference": result.reference}
        )
        if not result.succeeded:
            await repo.add_refunded(uow, tenant_id, row.id, -amount, rt.clock.now())
        refund = repo.to_refund(await repo.get_refund(uow, tenant_id, refund_id))
        payment = repo.to_payment(await repo.get_payment(uow, tenant_id, row.id))
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
                at=rt.clock.now(),
            )
            await OUTBOX.record(
                uow, tenant_id, "refund.created", _refund_event(refund, payment), rt.clock.now()
            )
            await OUTBOX.record(
                uow, tenant_id, "payment.refunded", payment.model_dump(mode="json"), rt.clock.now()
            )
        else:
            await OUTBOX.record(
                uow, tenant_id, "refund.failed", _refund_event(refund, payment), rt.clock.now()
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
