"""`recur verify`: proof from the books that nothing was lost or made twice.

An operator's tool, so it reads every service's tables directly (like the composition root,
it stands outside the services). Each check returns the ids that break it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa

from recur.customers.tables import balance_transactions, customers
from recur.customers.tables import ledger as customers_ledger
from recur.kit.db import Database, UnitOfWork
from recur.orders.tables import orders
from recur.payments.tables import payments
from recur.schema import all_tables


@dataclass(frozen=True)
class Finding:
    check: str
    offenders: list[str]

    @property
    def ok(self) -> bool:
        return not self.offenders


async def unbalanced_transactions(uow: UnitOfWork) -> list[str]:
    """Ledger transactions whose debits and credits differ, in any service's ledger."""
    found: list[str] = []
    for table in all_tables():
        if not table.name.endswith("_ledger"):
            continue
        rows = await uow.fetch_all(
            sa.select(table.c.transaction_id)
            .group_by(table.c.transaction_id)
            .having(sa.func.sum(table.c.debit) != sa.func.sum(table.c.credit))
        )
        found += [f"{table.name}:{row.transaction_id}" for row in rows]
    return found


async def paid_orders_not_covered(uow: UnitOfWork) -> list[str]:
    """Paid orders whose succeeded payments and applied credit do not make their total."""
    paid = (
        sa.select(payments.c.order_id, sa.func.sum(payments.c.amount).label("paid"))
        .where(payments.c.status == "succeeded", payments.c.order_id.is_not(None))
        .group_by(payments.c.order_id)
        .subquery()
    )
    credited = (
        sa.select(
            balance_transactions.c.source_id.label("order_id"),
            (-sa.func.sum(balance_transactions.c.amount)).label("credited"),
        )
        .where(balance_transactions.c.type == "applied_to_order")
        .group_by(balance_transactions.c.source_id)
        .subquery()
    )
    covered = sa.func.coalesce(paid.c.paid, 0) + sa.func.coalesce(credited.c.credited, 0)
    rows = await uow.fetch_all(
        sa.select(orders.c.id)
        .select_from(
            orders.outerjoin(paid, paid.c.order_id == orders.c.id).outerjoin(
                credited, credited.c.order_id == orders.c.id
            )
        )
        .where(orders.c.status == "paid", covered < orders.c.total)
    )
    return [row.id for row in rows]


async def periods_ordered_twice(uow: UnitOfWork) -> list[str]:
    """Subscription periods with more than one order."""
    rows = await uow.fetch_all(
        sa.select(orders.c.subscription_id, orders.c.period_start)
        .where(orders.c.subscription_id.is_not(None))
        .group_by(orders.c.tenant_id, orders.c.subscription_id, orders.c.period_start)
        .having(sa.func.count() > 1)
    )
    return [f"{row.subscription_id}@{row.period_start.isoformat()}" for row in rows]


async def balances_not_matching_ledger(uow: UnitOfWork) -> list[str]:
    """Customers whose credit balance differs from their `customer_credit` ledger account."""
    ledger = (
        sa.select(
            customers_ledger.c.customer_id,
            sa.func.sum(customers_ledger.c.credit - customers_ledger.c.debit).label("held"),
        )
        .where(customers_ledger.c.account == "customer_credit")
        .group_by(customers_ledger.c.customer_id)
        .subquery()
    )
    rows = await uow.fetch_all(
        sa.select(customers.c.id)
        .select_from(customers.outerjoin(ledger, ledger.c.customer_id == customers.c.id))
        .where(customers.c.balance != sa.func.coalesce(ledger.c.held, 0))
    )
    return [row.id for row in rows]


CHECKS: dict[str, Callable[[UnitOfWork], Awaitable[list[str]]]] = {
    "every ledger transaction balances": unbalanced_transactions,
    "every paid order is covered by succeeded payments": paid_orders_not_covered,
    "no subscription period was ordered twice": periods_ordered_twice,
    "every customer balance equals its ledger": balances_not_matching_ledger,
}


async def verify(db: Database) -> list[Finding]:
    """Run every check on the whole database (all tenants)."""
    findings = []
    async with UnitOfWork(db) as uow:
        for name, check in CHECKS.items():
            findings.append(Finding(name, await check(uow)))
    return findings
