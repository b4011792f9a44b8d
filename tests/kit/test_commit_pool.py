"""A commit gives its connection back before its events are delivered: many commits at once
never leave the pool held by commits each waiting for one more connection."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import create_async_engine

from recur.customers.service import OUTBOX
from recur.customers.tables import inbox
from recur.kit.db import UnitOfWork, is_sqlite
from recur.kit.events import Event


async def test_concurrent_commits_with_events_never_starve_the_pool(runtime) -> None:
    if not is_sqlite(runtime.db.url):
        # Two connections in all, and a short wait for one. (SQLite takes one writer at a
        # time whatever the pool: there the commits simply take turns.)
        await runtime.db.engine.dispose()
        runtime.db.engine = create_async_engine(
            runtime.db.url, pool_size=1, max_overflow=1, pool_timeout=3
        )
    applied: list[str] = []

    async def consume(uow: UnitOfWork, event: Event) -> None:
        applied.append(event.id)

    runtime.bus.subscribe("test.pool", "customers", inbox, consume)

    async def write(i: int) -> None:
        async with runtime.uow() as uow:
            await OUTBOX.record(uow, "ten_pool", "test.pool", {"i": i}, runtime.clock.now())
            await uow.commit()

    await asyncio.gather(*(write(i) for i in range(12)))
    assert len(applied) == 12
