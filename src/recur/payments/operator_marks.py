"""Operators' marks on manual payments (bank transfers, cash): paid, or not received.

As `gateways.manual` describes it: the mark is kept (`payment_operator_marks`, one per
payment), then the payment is settled from it with `manual.settlement`, through `batch.settle`
like any gateway's answer (ledger lines, `payment.succeeded` or `payment.failed`). Should the
process stop between the two, the payment is still pending with its mark kept: `marks_reader`
is the manual adapter's `operator_marks`, so the reconciler's `lookup_charge` reads the mark
and settles it, and marking it again settles it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from recur.kit.errors import Conflict
from recur.payments import batch
from recur.payments.gateways import manual
from recur.payments.gateways.manual import MarkLookup, OperatorMark
from recur.payments.schemas import OperatorMark as OperatorMarkIn
from recur.payments.schemas import Payment
from recur.payments.service import get_payment
from recur.payments.tables import payment_operator_marks
from recur.payments.webhooks import payment_id_for_key

if TYPE_CHECKING:
    from recur.runtime import Runtime


async def mark_payment(
    rt: Runtime, tenant_id: str, payment_id: str, *, paid: bool, by: str, params: OperatorMarkIn
) -> Payment:
    """An operator says the manual payment was paid (or not): it is settled so. Conflict
    unless the payment is of the manual gateway and still pending (or marked the other way)."""
    payment = await get_payment(rt, tenant_id, payment_id)
    if payment.gateway != manual.NAME:
        raise Conflict(
            f"only a payment of the manual gateway is marked by an operator; this one went "
            f"through {payment.gateway}",
            param="payment_id",
            code="not_a_manual_payment",
        )
    if payment.status != "pending":
        raise Conflict(
            f"the payment is already {payment.status}",
            param="payment_id",
            code="payment_not_pending",
        )
    mark = manual.mark(
        payment.id, paid=paid, by=by, clock=rt.clock, reference=params.reference, note=params.note
    )
    try:
        async with rt.uow() as uow:
            await uow.execute(
                sa.insert(payment_operator_marks).values(
                    payment_id=payment.id,
                    tenant_id=tenant_id,
                    paid=mark.paid,
                    marked_by=mark.marked_by,
                    marked_at=mark.marked_at,
                    reference=mark.reference,
                    note=mark.note,
                )
            )
            await uow.commit()
    except IntegrityError:
        # Marked before: settled from that mark, if it says the same.
        kept = await _mark_of(rt, tenant_id, payment.id)
        if kept is None or kept.paid != paid:
            raise Conflict(
                "the payment was already marked the other way",
                param="payment_id",
                code="payment_already_marked",
            ) from None
        mark = kept
    # Settled now, or meanwhile by the reconciler from the same mark: the answer is the same.
    settled = await batch.settle(rt, tenant_id, {payment.id: manual.settlement(mark)})
    # A subscription's order left unpaid goes to dunning, as a decline of any gateway does.
    await batch.dun_failed(rt, tenant_id, settled.values())
    return await get_payment(rt, tenant_id, payment.id)


async def _mark_of(rt: Runtime, tenant_id: str | None, payment_id: str) -> OperatorMark | None:
    where = [payment_operator_marks.c.payment_id == payment_id]
    if tenant_id is not None:
        where.append(payment_operator_marks.c.tenant_id == tenant_id)
    async with rt.uow() as uow:
        row = await uow.fetch_one(sa.select(payment_operator_marks).where(*where))
    if row is None:
        return None
    return OperatorMark(payment_id, row.paid, row.marked_by, row.marked_at, row.reference, row.note)


def marks_reader(rt: Runtime) -> MarkLookup:
    """The manual adapter's `operator_marks`: the mark of the payment charged with an
    idempotency key (its attempt's or its own), None while nobody marked it."""

    async def read(idempotency_key: str) -> OperatorMark | None:
        async with rt.uow() as uow:
            payment_id = await payment_id_for_key(uow, idempotency_key)
        if payment_id is None:
            return None
        found = await _mark_of(rt, None, payment_id)
        if found is None:
            return None
        # As the adapter asked: under the key it knows the charge by.
        return OperatorMark(
            idempotency_key,
            found.paid,
            found.marked_by,
            found.marked_at,
            found.reference,
            found.note,
        )

    return read
