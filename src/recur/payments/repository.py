"""All SQL of the Payment Gateway Service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from recur.kit.db import UnitOfWork
from recur.kit.pagination import fetch_page
from recur.payments.schemas import CardDetails, Payment, PaymentMethod, Refund
from recur.payments.tables import payment_methods, payments, refunds


def to_payment_method(row: Any) -> PaymentMethod:
    return PaymentMethod(
        id=row.id,
        customer_id=row.customer_id,
        gateway=row.gateway,
        card=CardDetails(
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
    )


def to_refund(row: Any) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        amount=row.amount,
        currency=row.currency,
        status=row.status,
        reason=row.reason,
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
