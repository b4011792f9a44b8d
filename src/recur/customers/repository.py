"""All SQL of the Customer Information Service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from recur.customers.schemas import Address, BalanceTransaction, BillingHistoryEntry, Customer
from recur.customers.tables import balance_transactions, billing_history, counters, customers
from recur.kit.db import UnitOfWork, fetch_by_ids, next_number, upsert
from recur.kit.errors import InvalidRequest
from recur.kit.ids import new_id
from recur.kit.pagination import fetch_page


def to_customer(row: Any) -> Customer:
    return Customer(
        id=row.id,
        number=row.number,
        email=row.email,
        name=row.name,
        phone=row.phone,
        description=row.description,
        address=Address(**row.address) if row.address else None,
        currency=row.currency,
        metadata=row.metadata,
        default_payment_method_id=row.default_payment_method_id,
        test_clock_id=row.test_clock_id,
        tax_rate_ids=row.tax_rate_ids or [],
        balance=row.balance,
        created=row.created,
    )


def cache_key(tenant_id: str, customer_id: str) -> str:
    """The cache key of a customer as `Customer` JSON."""
    return f"customer:{tenant_id}:{customer_id}"


def from_cache(value: Any) -> Customer | None:
    """A cached customer, or None when the value is missing or no longer reads as one (written
    by another version of Recur, say): a miss, never an error."""
    if value is None:
        return None
    try:
        return Customer.model_validate(value)
    except ValidationError:
        return None


def _forget_cached(uow: UnitOfWork, tenant_id: str, customer_id: str) -> None:
    """Every write to the customers table calls this: the cached customer goes after commit."""
    uow.forget_cached(cache_key(tenant_id, customer_id))


async def next_customer_number(uow: UnitOfWork, tenant_id: str) -> int:
    return await next_number(uow, counters, tenant_id, "customer")


async def insert(uow: UnitOfWork, values: dict[str, Any]) -> None:
    await uow.execute(sa.insert(customers).values(**values))


async def get(uow: UnitOfWork, tenant_id: str, customer_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(customers).where(
            customers.c.tenant_id == tenant_id, customers.c.id == customer_id
        )
    )


async def get_for_update(uow: UnitOfWork, tenant_id: str, customer_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(customers)
        .where(customers.c.tenant_id == tenant_id, customers.c.id == customer_id)
        .with_for_update()
    )


def to_balance_transaction(row: Any) -> BalanceTransaction:
    return BalanceTransaction.model_validate(row._mapping)


async def balance_transaction_by_source(
    uow: UnitOfWork, tenant_id: str, type_: str, source_id: str
) -> Any:
    return await uow.fetch_one(
        sa.select(balance_transactions).where(
            balance_transactions.c.tenant_id == tenant_id,
            balance_transactions.c.type == type_,
            balance_transactions.c.source_id == source_id,
        )
    )


async def record_balance_change(
    uow: UnitOfWork, values: dict[str, Any], customer_id: str, ending_balance: int
) -> None:
    """Write one balance transaction and the customer's new balance, together."""
    await uow.execute(sa.insert(balance_transactions).values(**values))
    await uow.execute(
        sa.update(customers)
        .where(customers.c.tenant_id == values["tenant_id"], customers.c.id == customer_id)
        .values(balance=ending_balance, updated=values["created"])
    )
    _forget_cached(uow, values["tenant_id"], customer_id)


async def balance_page(
    uow: UnitOfWork, tenant_id: str, customer_id: str, limit: int, starting_after: str | None
) -> tuple[Sequence[Any], bool]:
    stmt = sa.select(balance_transactions).where(
        balance_transactions.c.tenant_id == tenant_id,
        balance_transactions.c.customer_id == customer_id,
    )
    return await fetch_page(uow, stmt, balance_transactions.c.id, limit, starting_after)


async def get_by_number(uow: UnitOfWork, tenant_id: str, number: int) -> Any:
    return await uow.fetch_one(
        sa.select(customers).where(customers.c.tenant_id == tenant_id, customers.c.number == number)
    )


async def update(uow: UnitOfWork, tenant_id: str, customer_id: str, values: dict[str, Any]) -> None:
    await uow.execute(
        sa.update(customers)
        .where(customers.c.tenant_id == tenant_id, customers.c.id == customer_id)
        .values(**values)
    )
    _forget_cached(uow, tenant_id, customer_id)


async def clear_default_payment_method(
    uow: UnitOfWork, tenant_id: str, customer_id: str, payment_method_id: str, at: datetime
) -> None:
    await uow.execute(
        sa.update(customers)
        .where(
            customers.c.tenant_id == tenant_id,
            customers.c.id == customer_id,
            customers.c.default_payment_method_id == payment_method_id,
        )
        .values(default_payment_method_id=None, updated=at)
    )
    _forget_cached(uow, tenant_id, customer_id)


async def page(
    uow: UnitOfWork, tenant_id: str, limit: int, starting_after: str | None, email: str | None
) -> tuple[Sequence[Any], bool]:
    stmt = sa.select(customers).where(customers.c.tenant_id == tenant_id)
    if email is not None:
        stmt = stmt.where(customers.c.email == email)
    return await fetch_page(uow, stmt, customers.c.id, limit, starting_after)


def to_history_entry(row: Any) -> BillingHistoryEntry:
    return BillingHistoryEntry.model_validate(row._mapping)


async def record_history_many(
    uow: UnitOfWork, entries: list[tuple[str, BillingHistoryEntry, str]]
) -> None:
    """Insert or bring up to date the history lines of orders, payments or refunds, each
    (tenant_id, entry, customer_id), in order."""
    if not entries:
        return
    stmt = upsert(uow.conn, billing_history)
    stmt = stmt.on_conflict_do_update(
        index_elements=[billing_history.c.id],
        # Events may arrive out of order: an older status never overwrites a newer one.
        where=billing_history.c.updated <= stmt.excluded.updated,
        set_={
            "status": stmt.excluded.status,
            "amount": stmt.excluded.amount,
            "description": stmt.excluded.description,
            "updated": stmt.excluded.updated,
        },
    )
    # Many executions of one statement, not one multi-row statement: an entry may appear
    # twice in a batch (an order finalized, then paid), and each must see the one before.
    await uow.execute(
        stmt,
        [
            {
                **entry.model_dump(),
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "entry_id": new_id("bhe"),
            }
            for tenant_id, entry, customer_id in entries
        ],
    )


async def history_page(
    uow: UnitOfWork, tenant_id: str, customer_id: str, limit: int, starting_after: str | None
) -> tuple[Sequence[Any], bool]:
    where = (billing_history.c.tenant_id == tenant_id, billing_history.c.customer_id == customer_id)
    cursor = None
    if starting_after is not None:
        cursor = (
            await uow.execute(
                sa.select(billing_history.c.entry_id).where(
                    *where, billing_history.c.id == starting_after
                )
            )
        ).scalar_one_or_none()
        if cursor is None:
            raise InvalidRequest("no such entry in this history", param="starting_after")
    stmt = sa.select(billing_history).where(*where)
    return await fetch_page(uow, stmt, billing_history.c.entry_id, limit, cursor)


def parse_time(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


async def get_many(uow: UnitOfWork, tenant_id: str, customer_ids: Sequence[str]) -> list[Any]:
    return await fetch_by_ids(uow, customers, tenant_id, customer_ids)


async def lock_with_credit(
    uow: UnitOfWork, tenant_id: str, customer_ids: Sequence[str]
) -> list[Any]:
    """Lock those of the customers that hold credit (in id order, so batches never deadlock)."""
    return await fetch_by_ids(
        uow, customers, tenant_id, customer_ids, customers.c.balance > 0, for_update=True
    )


async def balance_transactions_by_sources(
    uow: UnitOfWork, tenant_id: str, type_: str, source_ids: Sequence[str]
) -> dict[str, Any]:
    rows = await uow.fetch_all(
        sa.select(balance_transactions).where(
            balance_transactions.c.tenant_id == tenant_id,
            balance_transactions.c.type == type_,
            balance_transactions.c.source_id.in_(set(source_ids)),
        )
    )
    return {row.source_id: row for row in rows}
