"""`recur migrate` builds exactly the schema the code describes, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from recur.cli import app as cli
from recur.kit.db import make_engine
from recur.schema import ALL_METADATA

PG_URL = os.environ.get("RECUR_TEST_DATABASE_URL")


def _differences(url: str) -> list[object]:
    async def compare() -> list[object]:
        engine = make_engine(url)
        async with engine.connect() as conn:

            def run(sync_conn: sa.Connection) -> list[object]:
                is_pg = sync_conn.dialect.name == "postgresql"
                context = MigrationContext.configure(
                    sync_conn,
                    opts={
                        "include_schemas": is_pg,
                        "include_name": lambda name, type_, _p: (
                            type_ != "schema"
                            or name is None
                            or name in {m.schema for m in ALL_METADATA}
                        ),
                        "compare_type": True,
                    },
                )
                if is_pg:
                    return compare_metadata(context, list(ALL_METADATA))
                # SQLite has no schemas: compare with the tables as they live there.
                flat = sa.MetaData()
                for metadata in ALL_METADATA:
                    for table in metadata.sorted_tables:
                        table.to_metadata(
                            flat,
                            schema=None,
                            referred_schema_fn=lambda *_: sa.schema.BLANK_SCHEMA,
                        )
                return compare_metadata(context, flat)

            diffs = await conn.run_sync(run)
        await engine.dispose()
        return diffs

    return asyncio.run(compare())


def test_migrate_on_sqlite_matches_the_tables(tmp_path: Path, monkeypatch) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("RECUR_DATABASE_URL", url)
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert _differences(url) == []
    # Running it again is a no-op.
    assert CliRunner().invoke(cli, ["migrate"]).exit_code == 0


@pytest.mark.skipif(PG_URL is None, reason="PostgreSQL not configured")
def test_migrate_on_postgresql_matches_the_tables(monkeypatch) -> None:
    assert PG_URL is not None
    base, _, name = PG_URL.rpartition("/")
    db_name = f"{name}_migrations"

    async def recreate() -> None:
        admin = sa.ext.asyncio.create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
        await admin.dispose()

    asyncio.run(recreate())
    url = f"{base}/{db_name}"
    monkeypatch.setenv("RECUR_DATABASE_URL", url)
    result = CliRunner().invoke(cli, ["migrate"])
    assert result.exit_code == 0, result.output
    assert _differences(url) == []
