"""Double-entry ledger lines, written by each service in the transaction that moves the money.

Every money movement is one ledger transaction: lines on accounts, each a debit or a credit in
minor units of one currency, whose debits equal their credits. A service keeps its own ledger
table (its own schema), so a movement and its lines commit or roll back together. `recur verify`
reads the ledgers back and checks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from recur.kit.db import UnitOfWork, UTCDateTime
from recur.kit.ids import new_id


@dataclass(frozen=True)
class Line:
    account: str
    debit: int = 0
    credit: int = 0


class UnbalancedTransaction(ValueError):
    pass


def ledger_table(metadata: sa.MetaData, service: str) -> sa.Table:
    return sa.Table(
        f"{service}_ledger",
        metadata,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("transaction_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        # What moved the money (an order, a payment, a credit), and on whose behalf.
        sa.Column("source_id", sa.String(80), nullable=False),
        sa.Column("customer_id", sa.String(40)),
        sa.Column("account", sa.String(60), nullable=False),
        sa.Column("debit", sa.BigInteger, nullable=False),
        sa.Column("credit", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Index(f"ix_{service}_ledger_transaction", "transaction_id"),
        sa.Index(f"ix_{service}_ledger_source", "tenant_id", "source_id"),
    )


def check_balanced(lines: list[Line]) -> None:
    """Refuse a transaction whose debits and credits differ, or with a negative amount."""
    if any(line.debit < 0 or line.credit < 0 for line in lines):
        raise UnbalancedTransaction("ledger amounts are never negative")
    if sum(line.debit for line in lines) != sum(line.credit for line in lines):
        raise UnbalancedTransaction("debits and credits differ")


@dataclass(frozen=True)
class Entry:
    """One ledger transaction, for `post_many`."""

    tenant_id: str
    kind: str
    source_id: str
    customer_id: str | None
    currency: str
    lines: list[Line]


def _rows(entry: Entry, at: datetime) -> list[dict[str, object]]:
    check_balanced(entry.lines)
    transaction_id = new_id("ltx")
    return [
        {
            "id": new_id("led"),
            "tenant_id": entry.tenant_id,
            "transaction_id": transaction_id,
            "kind": entry.kind,
            "source_id": entry.source_id,
            "customer_id": entry.customer_id,
            "account": line.account,
            "debit": line.debit,
            "credit": line.credit,
            "currency": entry.currency,
            "created": at,
        }
        for line in entry.lines
        if line.debit or line.credit
    ]


async def post_many(uow: UnitOfWork, table: sa.Table, entries: list[Entry], at: datetime) -> None:
    """Write many balanced transactions in one statement (the bill run's batches)."""
    await uow.insert_rows(table, [row for entry in entries for row in _rows(entry, at)])


async def post(
    uow: UnitOfWork,
    table: sa.Table,
    *,
    tenant_id: str,
    kind: str,
    source_id: str,
    customer_id: str | None,
    currency: str,
    lines: list[Line],
    at: datetime,
) -> None:
    """Write one balanced transaction in the current unit of work; lines of 0 are left out."""
    await post_many(
        uow, table, [Entry(tenant_id, kind, source_id, customer_id, currency, lines)], at
    )
