"""All SQL of the Payment Gateway Service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from recur.kit.db import (
    UnitOfWork,
    claim_leased,
    fetch_by_ids,
    insert_ignoring_conflicts,
    upsert,
)
from recur.kit.pagination import fetch_page
from recur.payments.gateways.manual import METHOD_OF_TOKEN
from recur.payments.gateways.manual import NAME as MANUAL
from recur.payments.schemas import CardDetails, Payment, PaymentMethod, Refund
from recur.payments.tables import (
    payment_dunning,
    payment_methods,
    payments,
    payments_dunning_settings,
    refunds,
)


def to_payment_method(row: Any) -> PaymentMethod:
    manual = METHOD_OF_TOKEN.get(row.gateway_token) if row.gateway == MANUAL else None
    return PaymentMethod(
        id=row.id,
        customer_id=row.customer_id,
        type=manual or "card",
        gateway=row.gateway,
        card=None
        if manual
        else CardDetails(
            brand=row.brand, last4=row.last4, exp_month=row.exp_month, exp_year=row.exp_year
        ),
        created=row.created,
    )


def to_payment(row: Any) -> Payment:
    return Payment(
        id=row.id,
        customer_id=row.customer_id,
        order_id=row.order_id,
        amount=row.amount,
        currency=row.currency,
        status=row.status,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        amount_refunded=row.amount_refunded,
        refunded=row.status == "succeeded" and row.amount_refunded >= row.amount,
        payment_method_id=row.payment_method_id,
        gateway=row.gateway,
        gateway_reference=row.gateway_reference,
        description=row.description,
        created=row.created,
        dispute_status=row.dispute_status,
        amount_disputed=row.amount_disputed,
        routing_reason=row.routing_reason,
        routing_rule_id=row.routing_rule_id,
    )


def to_refund(row: Any) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        amount=row.amount,
        currency=row.currency,
        status=row.status,
        reason=row.reason,
        gateway_reference=row.gateway_reference,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        created=row.created,
    )


# Payment methods. A detached one is kept (payments still name it) but is invisible.


async def insert_payment_method(uow: UnitOfWork, values: dict[str, Any]) -> None:
    await uow.execute(sa.insert(payment_methods).values(**values))


async def get_payment_method(uow: UnitOfWork, tenant_id: str, payment_method_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(payment_methods).where(
            payment_methods.c.tenant_id == tenant_id,
            payment_methods.c.id == payment_method_id,
            payment_methods.c.detached_at.is_(None),
        )
    )


async def detach_payment_method(
    uow: UnitOfWork, tenant_id: str, payment_method_id: str, values: dict[str, Any]
) -> None:
    await uow.execute(
        sa.update(payment_methods)
        .where(payment_methods.c.tenant_id == tenant_id, payment_methods.c.id == payment_method_id)
        .values(**values)
    )


async def payment_methods_page(
    uow: UnitOfWork, tenant_id: str, customer_id: str, limit: int, starting_after: str | None
) -> tuple[Sequence[Any], bool]:
    stmt = sa.select(payment_methods).where(
        payment_methods.c.tenant_id == tenant_id,
        payment_methods.c.customer_id == customer_id,
        payment_methods.c.detached_at.is_(None),
    )
    return await fetch_page(uow, stmt, payment_methods.c.id, limit, starting_after)


# Payments


async def insert_payment(uow: UnitOfWork, values: dict[str, Any]) -> None:
    await uow.execute(sa.insert(payments).values(**values))


async def get_payment(
    uow: UnitOfWork, tenant_id: str, payment_id: str, *, for_update: bool = False
) -> Any:
    stmt = sa.select(payments).where(payments.c.tenant_id == tenant_id, payments.c.id == payment_id)
    if for_update:
        stmt = stmt.with_for_update()
    return await uow.fetch_one(stmt)


async def settle_payment(
    uow: UnitOfWork, tenant_id: str, payment_id: str, values: dict[str, Any]
) -> int:
    """Move a pending payment to its outcome; 0 rows when it was not pending any more."""
    result = await uow.execute(
        sa.update(payments)
        .where(
            payments.c.tenant_id == tenant_id,
            payments.c.id == payment_id,
            payments.c.status == "pending",
        )
        .values(**values)
    )
    return result.rowcount


async def add_refunded(
    uow: UnitOfWork, tenant_id: str, payment_id: str, amount: int, at: Any
) -> None:
    """Add `amount` (negative to give it back) to what is refunded of the payment."""
    await uow.execute(
        sa.update(payments)
        .where(payments.c.tenant_id == tenant_id, payments.c.id == payment_id)
        .values(amount_refunded=payments.c.amount_refunded + amount, updated=at)
    )


async def payments_page(
    uow: UnitOfWork,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    customer_id: str | None = None,
    order_id: str | None = None,
) -> tuple[Sequence[Any], bool]:
    stmt = sa.select(payments).where(payments.c.tenant_id == tenant_id)
    if customer_id is not None:
        stmt = stmt.where(payments.c.customer_id == customer_id)
    if order_id is not None:
        stmt = stmt.where(payments.c.order_id == order_id)
    return await fetch_page(uow, stmt, payments.c.id, limit, starting_after)


# Refunds


async def insert_refund(uow: UnitOfWork, values: dict[str, Any]) -> None:
    await uow.execute(sa.insert(refunds).values(**values))


async def get_refund(uow: UnitOfWork, tenant_id: str, refund_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(refunds).where(refunds.c.tenant_id == tenant_id, refunds.c.id == refund_id)
    )


async def update_refund(
    uow: UnitOfWork, tenant_id: str, refund_id: str, values: dict[str, Any]
) -> None:
    await uow.execute(
        sa.update(refunds)
        .where(refunds.c.tenant_id == tenant_id, refunds.c.id == refund_id)
        .values(**values)
    )


async def refunds_page(
    uow: UnitOfWork,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    payment_id: str | None = None,
) -> tuple[Sequence[Any], bool]:
    stmt = sa.select(refunds).where(refunds.c.tenant_id == tenant_id)
    if payment_id is not None:
        stmt = stmt.where(refunds.c.payment_id == payment_id)
    return await fetch_page(uow, stmt, refunds.c.id, limit, starting_after)


# Dunning


async def get_dunning_settings(uow: UnitOfWork, tenant_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(payments_dunning_settings).where(
            payments_dunning_settings.c.tenant_id == tenant_id
        )
    )


async def save_dunning_settings(
    uow: UnitOfWork, tenant_id: str, retry_days: list[int], final_action: str, at: datetime
) -> None:
    values = {"retry_days": retry_days, "final_action": final_action, "updated": at}
    stmt = upsert(uow.conn, payments_dunning_settings).values(tenant_id=tenant_id, **values)
    await uow.execute(
        stmt.on_conflict_do_update(
            index_elements=[payments_dunning_settings.c.tenant_id], set_=values
        )
    )


async def get_dunning(
    uow: UnitOfWork, tenant_id: str, order_id: str, *, for_update: bool = False
) -> Any:
    stmt = sa.select(payment_dunning).where(
        payment_dunning.c.tenant_id == tenant_id, payment_dunning.c.order_id == order_id
    )
    if for_update:
        stmt = stmt.with_for_update()
    return await uow.fetch_one(stmt)


async def insert_dunning_if_absent(uow: UnitOfWork, values: dict[str, Any]) -> bool:
    """Open a dunning record; False when the order has one already (one per order, ever)."""
    result = await uow.execute(
        insert_ignoring_conflicts(uow.conn, payment_dunning).values(**values)
    )
    return result.rowcount == 1


async def update_dunning(
    uow: UnitOfWork, tenant_id: str, order_id: str, values: dict[str, Any]
) -> None:
    await uow.execute(
        sa.update(payment_dunning)
        .where(payment_dunning.c.tenant_id == tenant_id, payment_dunning.c.order_id == order_id)
        .values(**values)
    )


def _dunning_due(
    *, until: datetime, wall_now: datetime, test_clock_id: str | None, tenant_id: str | None
) -> list[Any]:
    """Open records due by `until` on one clock that no worker holds a lease on."""
    conditions = [
        payment_dunning.c.status == "open",
        payment_dunning.c.next_retry_at <= until,
        payment_dunning.c.test_clock_id.is_(None)
        if test_clock_id is None
        else payment_dunning.c.test_clock_id == test_clock_id,
        sa.or_(
            payment_dunning.c.claimed_until.is_(None),
            payment_dunning.c.claimed_until < wall_now,
        ),
    ]
    if tenant_id is not None:
        conditions.append(payment_dunning.c.tenant_id == tenant_id)
    return conditions


async def claim_due_dunning(
    uow: UnitOfWork,
    *,
    now: datetime,
    wall_now: datetime,
    lease_until: datetime,
    test_clock_id: str | None,
    tenant_id: str | None,
    limit: int,
) -> Sequence[Any]:
    """Claim up to `limit` records whose retry is due, skipping rows another worker holds
    (SKIP LOCKED) or has leased, and lease them to this worker."""
    return await claim_leased(
        uow,
        payment_dunning,
        key=payment_dunning.c.order_id,
        where=_dunning_due(
            until=now, wall_now=wall_now, test_clock_id=test_clock_id, tenant_id=tenant_id
        ),
        order_by=payment_dunning.c.next_retry_at,
        limit=limit,
        lease_until=lease_until,
    )


async def claim_dunning_for_new_card(
    uow: UnitOfWork,
    tenant_id: str,
    order_id: str,
    payment_method_id: str,
    *,
    wall_now: datetime,
    lease_until: datetime,
) -> bool:
    """Lease an open record for a retry with `payment_method_id`, unless its last attempt used
    that card already or another worker holds it. One conditional UPDATE: two triggers for
    the same new card retry once."""
    result = await uow.execute(
        sa.update(payment_dunning)
        .where(
            payment_dunning.c.tenant_id == tenant_id,
            payment_dunning.c.order_id == order_id,
            payment_dunning.c.status == "open",
            payment_dunning.c.last_payment_method_id.is_distinct_from(payment_method_id),
            sa.or_(
                payment_dunning.c.claimed_until.is_(None),
                payment_dunning.c.claimed_until < wall_now,
            ),
        )
        .values(claimed_until=lease_until)
    )
    return result.rowcount == 1


async def close_dunning_of_subscription(
    uow: UnitOfWork, tenant_id: str, customer_id: str, subscription_id: str, at: datetime
) -> int:
    """Close the subscription's open dunning records (no retry is due after this); how many."""
    result = await uow.execute(
        sa.update(payment_dunning)
        .where(
            payment_dunning.c.tenant_id == tenant_id,
            payment_dunning.c.customer_id == customer_id,
            payment_dunning.c.status == "open",
            payment_dunning.c.subscription_id == subscription_id,
        )
        .values(status="closed", next_retry_at=None, claimed_until=None, updated=at)
    )
    return result.rowcount


async def open_dunning_of_customer(
    uow: UnitOfWork, tenant_id: str, customer_id: str, *, not_tried_with: str | None = None
) -> Sequence[Any]:
    """The customer's open dunning records (whose last attempt did not use `not_tried_with`)."""
    stmt = sa.select(payment_dunning).where(
        payment_dunning.c.tenant_id == tenant_id,
        payment_dunning.c.customer_id == customer_id,
        payment_dunning.c.status == "open",
    )
    if not_tried_with is not None:
        stmt = stmt.where(payment_dunning.c.last_payment_method_id.is_distinct_from(not_tried_with))
    return await uow.fetch_all(stmt.order_by(payment_dunning.c.first_failed_at))


async def next_dunning_due(
    uow: UnitOfWork,
    *,
    tenant_id: str,
    test_clock_id: str | None,
    until: datetime,
    wall_now: datetime,
) -> datetime | None:
    """The earliest retry due by `until` on the clock, of records free to be claimed."""
    stmt = sa.select(sa.func.min(payment_dunning.c.next_retry_at)).where(
        *_dunning_due(
            until=until, wall_now=wall_now, test_clock_id=test_clock_id, tenant_id=tenant_id
        )
    )
    return (await uow.execute(stmt)).scalar_one_or_none()


async def get_payments(uow: UnitOfWork, tenant_id: str, payment_ids: Sequence[str]) -> list[Any]:
    return await fetch_by_ids(uow, payments, tenant_id, payment_ids)


async def lock_pending(uow: UnitOfWork, tenant_id: str, payment_ids: Sequence[str]) -> set[str]:
    """Lock those of the payments that are still pending; their ids."""
    rows = await fetch_by_ids(
        uow, payments, tenant_id, payment_ids, payments.c.status == "pending", for_update=True
    )
    return {row.id for row in rows}
