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
from recur.orders.tables import ledger as orders_ledger
from recur.orders.tables import orders
from recur.payments.tables import ledger as payments_ledger
from recur.payments.tables import payments, refunds
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


def _account_net(ledger: sa.Table, account: str) -> sa.ColumnElement[int]:
    """Debits minus credits of one account, in an aggregate over `ledger`'s lines."""
    line = ledger.c
    return sa.func.coalesce(
        sa.func.sum(sa.case((line.account == account, line.debit - line.credit), else_=0)), 0
    )


async def receivables_not_matching_orders(uow: UnitOfWork) -> list[str]:
    """Orders whose receivable (or, written off, whose bad debt) in the orders ledger differs
    from what they still owe.

    Finalizing debits the total to `accounts_receivable`; credit applied and payments credit it;
    a void credits what is left; a write-off moves what is left to `bad_debt`, which payments
    received later credit. So an open order's receivable is its amount due and every other
    order's is 0; an uncollectible order's bad debt is its amount due (written off less
    recovered), and every other order's is 0.
    """
    held = (
        sa.select(
            orders_ledger.c.tenant_id,
            orders_ledger.c.source_id,
            _account_net(orders_ledger, "accounts_receivable").label("receivable"),
            _account_net(orders_ledger, "bad_debt").label("bad_debt"),
        )
        .where(orders_ledger.c.account.in_(("accounts_receivable", "bad_debt")))
        .group_by(orders_ledger.c.tenant_id, orders_ledger.c.source_id)
        .subquery()
    )
    left = orders.c.total - orders.c.credit_applied - orders.c.amount_paid
    due = sa.case((left > 0, left), else_=0)
    rows = await uow.fetch_all(
        sa.select(orders.c.id)
        .select_from(
            orders.outerjoin(
                held,
                sa.and_(held.c.tenant_id == orders.c.tenant_id, held.c.source_id == orders.c.id),
            )
        )
        .where(
            sa.or_(
                sa.func.coalesce(held.c.receivable, 0)
                != sa.case((orders.c.status == "open", due), else_=0),
                sa.func.coalesce(held.c.bad_debt, 0)
                != sa.case((orders.c.status == "uncollectible", due), else_=0),
            )
        )
    )
    return [row.id for row in rows]


async def gateway_cash_not_matching_payments(uow: UnitOfWork) -> list[str]:
    """Gateway cash accounts (`gateway_cash:<gateway>`, per tenant and currency) of the payments
    ledger that differ from the succeeded payments less the succeeded refunds through that
    gateway, less what disputes hold (open) or took (lost). Named `tenant/account/currency`."""
    prefix = "gateway_cash:"
    account = sa.literal(prefix, sa.String).concat(payments.c.gateway)
    moves = sa.union_all(
        sa.select(
            payments_ledger.c.tenant_id,
            payments_ledger.c.account,
            payments_ledger.c.currency,
            (payments_ledger.c.debit - payments_ledger.c.credit).label("amount"),
        ).where(payments_ledger.c.account.startswith(prefix, autoescape=True)),
        sa.select(payments.c.tenant_id, account, payments.c.currency, -payments.c.amount).where(
            payments.c.status == "succeeded"
        ),
        sa.select(refunds.c.tenant_id, account, refunds.c.currency, refunds.c.amount)
        .select_from(
            refunds.join(
                payments,
                sa.and_(
                    payments.c.tenant_id == refunds.c.tenant_id,
                    payments.c.id == refunds.c.payment_id,
                ),
            )
        )
        .where(refunds.c.status == "succeeded"),
        sa.select(
            payments.c.tenant_id, account, payments.c.currency, payments.c.amount_disputed
        ).where(payments.c.status == "succeeded", payments.c.dispute_status.in_(("open", "lost"))),
    ).subquery()
    rows = await uow.fetch_all(
        sa.select(moves.c.tenant_id, moves.c.account, moves.c.currency)
        .group_by(moves.c.tenant_id, moves.c.account, moves.c.currency)
        .having(sa.func.sum(moves.c.amount) != 0)
    )
    return [f"{row.tenant_id}/{row.account}/{row.currency}" for row in rows]


async def disputes_not_matching_ledger(uow: UnitOfWork) -> list[str]:
    """Payments whose dispute accounts in the payments ledger differ from their dispute: an
    open dispute holds `amount_disputed` in `disputes`, a lost one has it in `dispute_losses`,
    and otherwise both are 0 for the payment."""
    held = (
        sa.select(
            payments_ledger.c.tenant_id,
            payments_ledger.c.source_id,
            _account_net(payments_ledger, "disputes").label("held"),
            _account_net(payments_ledger, "dispute_losses").label("lost"),
        )
        .where(payments_ledger.c.account.in_(("disputes", "dispute_losses")))
        .group_by(payments_ledger.c.tenant_id, payments_ledger.c.source_id)
        .subquery()
    )
    rows = await uow.fetch_all(
        sa.select(payments.c.id)
        .select_from(
            payments.outerjoin(
                held,
                sa.and_(
                    held.c.tenant_id == payments.c.tenant_id, held.c.source_id == payments.c.id
                ),
            )
        )
        .where(
            sa.or_(
                sa.func.coalesce(held.c.held, 0)
                != sa.case(
                    (payments.c.dispute_status == "open", payments.c.amount_disputed), else_=0
                ),
                sa.func.coalesce(held.c.lost, 0)
                != sa.case(
                    (payments.c.dispute_status == "lost", payments.c.amount_disputed), else_=0
                ),
            )
        )
    )
    return [row.id for row in rows]


async def payments_not_applied_to_orders(uow: UnitOfWork) -> list[str]:
    """Orders whose succeeded payments differ from what the orders ledger applied to them
    (`payments_clearing`): a payment received and never applied (an overpayment, a payment of
    a void order: owed back), or applied without a payment. A refund leaves both sides as they
    are."""
    moves = sa.union_all(
        sa.select(
            payments.c.tenant_id, payments.c.order_id.label("order_id"), payments.c.amount
        ).where(payments.c.status == "succeeded", payments.c.order_id.is_not(None)),
        sa.select(
            orders_ledger.c.tenant_id,
            orders_ledger.c.source_id,
            orders_ledger.c.credit - orders_ledger.c.debit,
        ).where(orders_ledger.c.account == "payments_clearing"),
    ).subquery()
    rows = await uow.fetch_all(
        sa.select(moves.c.order_id)
        .group_by(moves.c.tenant_id, moves.c.order_id)
        .having(sa.func.sum(moves.c.amount) != 0)
    )
    return [row.order_id for row in rows]


CHECKS: dict[str, Callable[[UnitOfWork], Awaitable[list[str]]]] = {
    "every ledger transaction balances": unbalanced_transactions,
    "every paid order is covered by succeeded payments": paid_orders_not_covered,
    "no subscription period was ordered twice": periods_ordered_twice,
    "every customer balance equals its ledger": balances_not_matching_ledger,
    "every order's receivable equals what it owes": receivables_not_matching_orders,
    "gateway cash equals payments less refunds": gateway_cash_not_matching_payments,
    "every dispute's ledger equals what it holds or lost": disputes_not_matching_ledger,
    "every succeeded payment is applied to its order": payments_not_applied_to_orders,
}


async def verify(db: Database) -> list[Finding]:
    """Run every check on the whole database (all tenants)."""
    findings = []
    async with UnitOfWork(db) as uow:
        for name, check in CHECKS.items():
            findings.append(Finding(name, await check(uow)))
    return findings
