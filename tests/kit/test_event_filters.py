"""A consumer that acts on only some events of its type: the others are neither applied nor
written to its inbox, and are still marked delivered."""

from __future__ import annotations

import sqlalchemy as sa

from recur.customers.service import OUTBOX
from recur.customers.tables import inbox
from recur.customers.tables import outbox as customers_outbox
from recur.kit.db import UnitOfWork
from recur.kit.events import Event


async def test_events_a_consumer_passes_over_touch_nothing(runtime) -> None:
    applied: list[int] = []

    async def consume(uow: UnitOfWork, event: Event) -> None:
        applied.append(event.payload["n"])

    runtime.bus.subscribe(
        "test.filtered", "customers", inbox, consume, when=lambda e: e.payload["n"] % 2 == 0
    )
    async with runtime.uow() as uow:
        for n in range(4):
            await OUTBOX.record(uow, "ten_filter", "test.filtered", {"n": n}, runtime.clock.now())
        await uow.commit()

    assert sorted(applied) == [0, 2]
    async with runtime.uow() as uow:
        received = (await uow.execute(sa.select(sa.func.count()).select_from(inbox))).scalar_one()
        undelivered = (
            await uow.execute(
                sa.select(sa.func.count()).where(customers_outbox.c.delivered_at.is_(None))
            )
        ).scalar_one()
    assert (received, undelivered) == (2, 0)
