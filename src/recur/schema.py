"""Every service's tables, for migrations and for the test suite."""

from __future__ import annotations

import sqlalchemy as sa

from recur.customers.tables import metadata as customers_metadata
from recur.gateway.tables import metadata as gateway_metadata
from recur.kit.db import SERVICE_SCHEMAS, Database
from recur.orders.tables import metadata as orders_metadata
from recur.payments.tables import metadata as payments_metadata
from recur.subscriptions.tables import metadata as subscriptions_metadata

ALL_METADATA = (
    gateway_metadata,
    customers_metadata,
    subscriptions_metadata,
    orders_metadata,
    payments_metadata,
)


def all_tables() -> list[sa.Table]:
    return [table for metadata in ALL_METADATA for table in metadata.sorted_tables]


async def create_all(db: Database) -> None:
    """Create the schemas and tables directly (tests); `recur migrate` is the way for users."""
    async with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            for schema in SERVICE_SCHEMAS:
                await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        for metadata in ALL_METADATA:
            await conn.run_sync(metadata.create_all)


async def truncate_all(db: Database) -> None:
    """Empty every table (between tests on PostgreSQL)."""
    names = ", ".join(f'"{t.schema}"."{t.name}"' for t in all_tables())
    async with db.engine.begin() as conn:
        await conn.execute(sa.text(f"TRUNCATE {names}"))
