"""Events: a transactional outbox per service, and in-process delivery after commit.

A service records an event in its own outbox table inside the transaction that makes the change
(`record`), so the change and its announcement commit or roll back together. After the commit the
unit of work hands the events to the bus, which delivers each one to every consumer, each in its
own transaction. A consumer first records the event id in its service's inbox table, so an event
delivered twice (after a crash, or by the sweeper) is applied once.

A consumer that fails leaves the event undelivered; `EventBus.redeliver_pending` (run on a
schedule by the server) tries again. Nothing is dropped and nothing is logged-and-forgotten.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.kit.db import UTCDateTime, insert_ignoring_conflicts
from recur.kit.ids import new_id

if TYPE_CHECKING:
    from recur.kit.clock import Clock
    from recur.kit.db import Database, UnitOfWork

log = logging.getLogger("recur.events")


@dataclass(frozen=True)
class Event:
    id: str
    service: str
    tenant_id: str
    type: str
    payload: dict[str, Any]
    created: datetime


Handler = Callable[["UnitOfWork", Event], Awaitable[None]]


def outbox_table(metadata: sa.MetaData, service: str) -> sa.Table:
    return sa.Table(
        f"{service}_outbox",
        metadata,
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(80), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime, nullable=True),
        sa.Index(f"ix_{service}_outbox_undelivered", "created", "delivered_at"),
    )


def inbox_table(metadata: sa.MetaData, service: str) -> sa.Table:
    return sa.Table(
        f"{service}_inbox",
        metadata,
        sa.Column("event_id", sa.String(40), primary_key=True),
        sa.Column("received_at", UTCDateTime, nullable=False),
    )


@dataclass
class Outbox:
    """One service's outbox."""

    service: str
    table: sa.Table

    async def record(
        self, uow: UnitOfWork, tenant_id: str, type: str, payload: dict[str, Any], at: datetime
    ) -> Event:
        """Write an event in the current transaction; it is delivered after the commit."""
        event = Event(new_id("evt"), self.service, tenant_id, type, payload, at)
        await uow.execute(
            sa.insert(self.table).values(
                id=event.id, tenant_id=tenant_id, type=type, payload=payload, created=at
            )
        )
        uow.pending_events.append(event)
        return event


@dataclass
class Consumer:
    service: str
    inbox: sa.Table
    handler: Handler


@dataclass
class EventBus:
    """Delivers committed events to the consumers of every service in this process."""

    db: Database
    clock: Clock
    outboxes: dict[str, Outbox] = field(default_factory=dict)
    consumers: dict[str, list[Consumer]] = field(default_factory=lambda: defaultdict(list))

    def add_outbox(self, outbox: Outbox) -> None:
        self.outboxes[outbox.service] = outbox

    def subscribe(self, event_type: str, service: str, inbox: sa.Table, handler: Handler) -> None:
        self.consumers[event_type].append(Consumer(service, inbox, handler))

    async def deliver(self, events: list[Event]) -> None:
        """Deliver each event to its consumers, then mark it delivered in its outbox."""
        for event in events:
            if await self._deliver_one(event):
                await self._mark_delivered(event)

    async def _deliver_one(self, event: Event) -> bool:
        from recur.kit.db import UnitOfWork

        all_applied = True
        for consumer in self.consumers.get(event.type, []):
            try:
                async with UnitOfWork(self.db, self) as uow:
                    inserted = await uow.execute(
                        insert_ignoring_conflicts(uow.conn, consumer.inbox).values(
                            event_id=event.id, received_at=self.clock.now()
                        )
                    )
                    if inserted.rowcount == 0:
                        continue  # applied before
                    await consumer.handler(uow, event)
                    await uow.commit()
            except Exception:
                # Left undelivered: the sweeper delivers it again, and the inbox keeps the
                # consumers that did apply it from applying it twice.
                log.exception("consumer %s failed on %s %s", consumer.service, event.type, event.id)
                all_applied = False
        return all_applied

    async def _mark_delivered(self, event: Event) -> None:
        from recur.kit.db import UnitOfWork

        table = self.outboxes[event.service].table
        async with UnitOfWork(self.db) as uow:
            await uow.execute(
                sa.update(table).where(table.c.id == event.id).values(delivered_at=self.clock.now())
            )
            await uow.commit()

    async def redeliver_pending(self, older_than: timedelta = timedelta(seconds=5)) -> int:
        """Deliver events left undelivered (a crash after commit, a failed consumer)."""
        from recur.kit.db import UnitOfWork

        cutoff = self.clock.now() - older_than
        delivered = 0
        for outbox in self.outboxes.values():
            table = outbox.table
            async with UnitOfWork(self.db) as uow:
                rows = await uow.fetch_all(
                    sa.select(table)
                    .where(table.c.delivered_at.is_(None), table.c.created <= cutoff)
                    .order_by(table.c.created, table.c.id)
                    .limit(500)
                )
            events = [
                Event(r.id, outbox.service, r.tenant_id, r.type, r.payload, r.created) for r in rows
            ]
            await self.deliver(events)
            delivered += len(events)
        return delivered
