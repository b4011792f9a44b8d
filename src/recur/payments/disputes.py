"""Disputes (chargebacks), as the gateways' webhooks tell of them.

A payment carries `dispute_status` (open, won, lost) and `amount_disputed`. In the payments
ledger, the money moves with the dispute, each move a balanced transaction on the payment:

| event                     | debit                  | credit                 |
|---------------------------|------------------------|------------------------|
| opened                    | `disputes`             | `gateway_cash:<gw>`    |
| closed, won               | `gateway_cash:<gw>`    | `disputes`             |
| closed, lost              | `dispute_losses`       | `disputes`             |
| lost after it was won     | `dispute_losses`       | `gateway_cash:<gw>`    |

(a second chargeback, as Adyen sends it). So `disputes` holds what the gateway is holding back,
and gateway cash is what succeeded, less refunds, less what is held or lost: `recur verify`
checks both. Each change is applied once whatever the gateway redelivers: a move is made only
from the state it starts from (a second "opened" of an open dispute changes nothing).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.kit import ledger
from recur.kit.db import UnitOfWork
from recur.payments import repository as repo
from recur.payments.schemas import Payment
from recur.payments.tables import OUTBOX, payments
from recur.payments.tables import ledger as payments_ledger

if TYPE_CHECKING:
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments")

HELD = "disputes"
LOST = "dispute_losses"


def _cash(gateway: str) -> str:
    return f"gateway_cash:{gateway}"


def disputed_amount(payment_amount: int, currency: str, amount: int | None, of: str | None) -> int:
    """What a dispute is about: the gateway's amount when it is in the payment's currency, never
    more than the payment; the whole payment otherwise."""
    if amount is None or amount <= 0 or (of is not None and of.upper() != currency):
        return payment_amount
    return min(amount, payment_amount)


async def open_dispute(
    rt: Runtime, tenant_id: str, payment_id: str, amount: int | None, currency: str | None
) -> Payment | None:
    """A dispute of the payment was opened: the money is held. None when nothing changed (the
    payment has no succeeded charge, or its dispute is already open or lost)."""
    async with rt.uow() as uow:
        row = await repo.get_payment(uow, tenant_id, payment_id, for_update=True)
        if row is None or row.status != "succeeded" or row.dispute_status in ("open", "lost"):
            return None
        disputed = disputed_amount(row.amount, row.currency, amount, currency)
        lines = [
            ledger.Line(HELD, debit=disputed),
            ledger.Line(_cash(row.gateway), credit=disputed),
        ]
        payment = await _move(uow, rt, row, "open", disputed, "dispute_opened", lines)
        await OUTBOX.record(
            uow,
            tenant_id,
            "payment.dispute_opened",
            payment.model_dump(mode="json"),
            rt.clock.now(),
        )
        await uow.commit()
    log.info("payment %s disputed: %s held", payment_id, disputed)
    return payment


async def close_dispute(
    rt: Runtime,
    tenant_id: str,
    payment_id: str,
    outcome: str,
    amount: int | None,
    currency: str | None,
) -> Payment | None:
    """The payment's dispute is over: `won` gives the held money back to gateway cash, `lost`
    writes it off. None when nothing changed (already closed so, or no succeeded charge)."""
    won = outcome == "won"
    async with rt.uow() as uow:
        row = await repo.get_payment(uow, tenant_id, payment_id, for_update=True)
        if row is None or row.status != "succeeded":
            return None
        status = row.dispute_status
        cash = _cash(row.gateway)
        disputed = row.amount_disputed or disputed_amount(
            row.amount, row.currency, amount, currency
        )
        if status == "open":
            account = cash if won else LOST
            lines = [ledger.Line(account, debit=disputed), ledger.Line(HELD, credit=disputed)]
        elif status in (None, "won") and not won:
            # Lost without being seen open (an event lost on the way), or lost after all.
            lines = [ledger.Line(LOST, debit=disputed), ledger.Line(cash, credit=disputed)]
        elif status is None and won:
            lines = []  # won without the money ever leaving
        else:
            return None
        kind = "dispute_won" if won else "dispute_lost"
        payment = await _move(uow, rt, row, "won" if won else "lost", disputed, kind, lines)
        await OUTBOX.record(
            uow,
            tenant_id,
            "payment.dispute_closed",
            payment.model_dump(mode="json"),
            rt.clock.now(),
        )
        await uow.commit()
    log.info("payment %s dispute %s", payment_id, outcome)
    return payment


async def _move(
    uow: UnitOfWork,
    rt: Runtime,
    row: Any,
    status: str,
    disputed: int,
    kind: str,
    lines: list[ledger.Line],
) -> Payment:
    now = rt.clock.now()
    await uow.execute(
        sa.update(payments)
        .where(payments.c.tenant_id == row.tenant_id, payments.c.id == row.id)
        .values(dispute_status=status, amount_disputed=disputed, updated=now)
    )
    if lines:
        await ledger.post(
            uow,
            payments_ledger,
            tenant_id=row.tenant_id,
            kind=kind,
            source_id=row.id,
            customer_id=row.customer_id,
            currency=row.currency,
            lines=lines,
            at=now,
        )
    return repo.to_payment(await repo.get_payment(uow, row.tenant_id, row.id))
