"""Test harness: every database test runs on SQLite and, when configured, on PostgreSQL.

`RECUR_TEST_DATABASE_URL` names a PostgreSQL server database URL
(postgresql+asyncpg://postgres@127.0.0.1:5432/recur_test); each xdist worker gets its own
database, created here. `RECUR_TEST_REQUIRE_SERVICES=1` (set by CI) turns a missing
PostgreSQL or Redis into a failure instead of a smaller run.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from recur.app import create_app
from recur.gateway.keys import create_key
from recur.kit.db import Database
from recur.runtime import Runtime, build_runtime
from recur.schema import create_all, truncate_all
from recur.settings import Settings

PG_URL = os.environ.get("RECUR_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("RECUR_TEST_REDIS_URL")
REQUIRE = os.environ.get("RECUR_TEST_REQUIRE_SERVICES") == "1"

if REQUIRE and not PG_URL:
    raise RuntimeError("RECUR_TEST_REQUIRE_SERVICES=1 but RECUR_TEST_DATABASE_URL is not set")
if REQUIRE and not REDIS_URL:
    raise RuntimeError("RECUR_TEST_REQUIRE_SERVICES=1 but RECUR_TEST_REDIS_URL is not set")

BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]


def _worker_suffix() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file with every table, copied for each test: faster than creating tables."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"

    async def build() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        await create_all(db)
        await db.dispose()

    asyncio.run(build())
    return path


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A fresh PostgreSQL database for this test worker, with every schema and table."""
    assert PG_URL is not None
    base, _, name = PG_URL.rpartition("/")
    db_name = f"{name}_{_worker_suffix()}"

    async def build() -> None:
        admin = sa.ext.asyncio.create_async_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        async with admin.connect() as conn:
            await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            await conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
        await admin.dispose()
        db = Database(f"{base}/{db_name}")
        await create_all(db)
        await db.dispose()

    asyncio.run(build())
    return f"{base}/{db_name}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A clean database for one test, on each configured backend."""
    if request.param == "sqlite":
        path = tmp_path / "recur.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")

        async def clean() -> None:
            db = Database(url)
            await truncate_all(db)
            await db.dispose()

        asyncio.run(clean())
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
    )


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    rt = build_runtime(settings)
    yield rt
    await rt.close()


@dataclass
class Tenant:
    id: str
    name: str
    key: str
    client: httpx.AsyncClient


@pytest.fixture
async def app(runtime: Runtime):  # type: ignore[no-untyped-def]
    return create_app(runtime)


async def _tenant(app, runtime: Runtime, name: str) -> AsyncIterator[Tenant]:  # type: ignore[no-untyped-def]
    issued = await create_key(runtime.db, runtime.clock, name)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://recur.test",
        headers={"Authorization": f"Bearer {issued.secret}"},
    ) as client:
        yield Tenant(issued.tenant_id, name, issued.secret, client)


@pytest.fixture
async def tenant(app, runtime: Runtime) -> AsyncIterator[Tenant]:  # type: ignore[no-untyped-def]
    """The tenant a test acts as, with an authenticated client of the whole API."""
    async for t in _tenant(app, runtime, "acme"):
        yield t


@pytest.fixture
async def api(tenant: Tenant) -> httpx.AsyncClient:
    return tenant.client


@pytest.fixture
async def other_tenant(app, runtime: Runtime) -> AsyncIterator[Tenant]:  # type: ignore[no-untyped-def]
    """A second tenant, to prove the first one's objects are invisible to it."""
    async for t in _tenant(app, runtime, "globex"):
        yield t


@pytest.fixture
def redis_url() -> str:
    if not REDIS_URL:
        pytest.skip("RECUR_TEST_REDIS_URL not set")  # CI sets it and REQUIRE fails first
    return REDIS_URL
