"""Alembic environment: every service's schema, on PostgreSQL or SQLite."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic import context
from sqlalchemy.engine import Connection

from recur.kit.db import SERVICE_SCHEMAS, make_engine
from recur.schema import ALL_METADATA

config = context.config


def _include_name(name: str | None, type_: str, _parent: object) -> bool:
    # Only Recur's own schemas; PostgreSQL's public schema holds alembic_version alone.
    if type_ == "schema":
        return name is None or name in {m.schema for m in ALL_METADATA}
    return True


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Each service owns a schema; migrations create tables inside them.
        for schema in SERVICE_SCHEMAS:
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=list(ALL_METADATA),
        include_schemas=connection.dialect.name == "postgresql",
        include_name=_include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate() -> None:
    engine = make_engine(config.attributes["database_url"], foreign_keys=False)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


asyncio.run(_migrate())
