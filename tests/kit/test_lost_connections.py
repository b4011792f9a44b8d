"""Database connections the server closed (a restart, a proxy's idle timeout), on PostgreSQL: a
connection idle for a while is checked before use and replaced if dead; one lost under a request
answers 503, and the next request gets a new connection."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from recur.app import create_app
from recur.gateway.keys import create_key
from recur.kit import db as kit_db
from recur.runtime import build_runtime
from recur.settings import Settings

from ..conftest import PG_URL

# CI requires PostgreSQL (RECUR_TEST_REQUIRE_SERVICES): there this always runs.
pytestmark = pytest.mark.skipif(PG_URL is None, reason="PostgreSQL not configured")


async def _terminate_others(url: str) -> int:
    """Close, from the server's side, every other connection to the database."""
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            rows = await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return len(rows.all())
    finally:
        await admin.dispose()


async def _backend_pid(engine) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()


async def test_an_idle_connection_closed_by_the_server_is_replaced(
    postgres_url: str, monkeypatch
) -> None:
    engine = kit_db.make_engine(postgres_url, pool_size=1)
    try:
        first = await _backend_pid(engine)
        assert await _terminate_others(postgres_url) >= 1
        # Idle long enough to be checked: the dead connection is found and replaced.
        monkeypatch.setattr(kit_db, "IDLE_CHECK_SECONDS", 0.0)
        second = await _backend_pid(engine)
        assert second != first
    finally:
        await engine.dispose()


async def test_a_connection_lost_under_a_request_is_a_503_then_replaced(
    postgres_url: str,
) -> None:
    rt = build_runtime(Settings(database_url=postgres_url, scheduler_enabled=False))
    app = create_app(rt)
    issued = await create_key(rt.db, rt.clock, "lost")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://recur.test",
            headers={"Authorization": f"Bearer {issued.secret}"},
        ) as api:
            assert (await api.get("/v1/customers")).status_code == 200
            await _terminate_others(postgres_url)  # used a moment ago: not checked again
            lost = await api.get("/v1/customers")
            assert lost.status_code == 503, lost.text
            assert lost.json()["error"]["code"] == "service_unavailable"
            assert lost.headers["retry-after"] == "1"
            assert (await api.get("/v1/customers")).status_code == 200
    finally:
        await rt.close()
