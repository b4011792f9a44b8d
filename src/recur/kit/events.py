"""Events: a transactional outbox per service, and in-process delivery after commit.

A service records an event in its own outbox table inside the transaction that makes the change
(`record`), so the change and its announcement commit or roll back together. After the commit the
unit of work hands the events to the bus, which delivers each one to every consumer, each in its
own transaction. A consumer first records the event id in its service's inbox table, so an event
delivered twice (after a crash, or by the sweeper) is applied once.

Delivery works in batches, as the bill run makes events by the thousand: each consumer takes the
events of a batch in one transaction (a consumer with a batch handler applies them in a few
statements). When that transaction fails, the consumer takes them again one at a time, so one
bad event holds back no other.

A consumer that fails leaves the event undelivered; `EventBus.redeliver_pending` (run on a
schedule by the server) tries again. Nothing is dropped and nothing is logged-and-forgotten.

In the distributed topology with Redis, the bus has a `StreamTransport` (kit/streams.py): after a
commit it publishes the events to Redis Streams instead, the outbox row's `delivered_at` meaning
relayed, and each service's processes apply them from their consumer group (`consume_forever`),
through the same consumers and inboxes.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.kit.cache import DISABLED, Cache
from recur.kit.db import UTCDateTime, insert_ignoring_conflicts
from recur.kit.ids import new_id
from recur.kit.streams import RedisError, StreamTransport, sleep_after_error

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
BatchHandler = Callable[["UnitOfWork", list[Event]], Awaitable[None]]

# Events per delivery transaction: a consumer's batch handler holds this many at once.
DELIVERY_CHUNK = 1000


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

    async def record_many(
        self, uow: UnitOfWork, items: list[tuple[str, str, dict[str, Any]]], at: datetime
    ) -> list[Event]:
        """Write many events, each (tenant_id, type, payload), in one statement."""
        events = [
            Event(new_id("evt"), self.service, tenant_id, type, payload, at)
            for tenant_id, type, payload in items
        ]
        await uow.insert_rows(
            self.table,
            [
                {
                    "id": e.id,
                    "tenant_id": e.tenant_id,
                    "type": e.type,
                    "payload": e.payload,
                    "created": at,
                    "delivered_at": None,
                }
                for e in events
            ],
        )
        uow.pending_events.extend(events)
        return events


@dataclass(frozen=True)
class Consumer:
    service: str
    inbox: sa.Table
    handler: Handler
    # Applies a list of events at once; without one, `handler` takes them one by one.
    batch_handler: BatchHandler | None = None
    # Which events of its types the consumer acts on (None: all). Those it passes over are
    # neither applied nor written to its inbox: a transaction saved for nothing to do.
    when: Callable[[Event], bool] | None = None

    def wants(self, event: Event) -> bool:
        return self.when is None or self.when(event)


@dataclass
class EventBus:
    """Delivers committed events to the consumers of every service in this process."""

    db: Database
    clock: Clock
    outboxes: dict[str, Outbox] = field(default_factory=dict)
    consumers: dict[str, list[Consumer]] = field(default_factory=lambda: defaultdict(list))
    # The cache the units of work of this process invalidate after they commit.
    cache: Cache = field(default_factory=lambda: DISABLED)
    # Set in the distributed topology with Redis: events travel through Redis Streams.
    transport: StreamTransport | None = None
    # The services running in this process (None: all of them). With a transport, the process
    # relays their outboxes and applies their consumers' events; the others' are not its own.
    local_services: frozenset[str] | None = None
    # After Redis lost its data, the events of this window are relayed again.
    replay_window: timedelta = timedelta(hours=1)
    _redis_down: bool = False

    def add_outbox(self, outbox: Outbox) -> None:
        self.outboxes[outbox.service] = outbox

    def subscribe(
        self,
        event_type: str,
        service: str,
        inbox: sa.Table,
        handler: Handler,
        *,
        batch_handler: BatchHandler | None = None,
        when: Callable[[Event], bool] | None = None,
    ) -> None:
        self.consumers[event_type].append(Consumer(service, inbox, handler, batch_handler, when))

    def _local(self, service: str) -> bool:
        return self.local_services is None or service in self.local_services

    async def deliver(self, events: list[Event]) -> None:
        """Deliver events to their consumers, then mark those every consumer took delivered.
        With a transport: publish them, and mark those relayed."""
        if self.transport is not None:
            await self._relay(events)
            return
        for start in range(0, len(events), DELIVERY_CHUNK):
            chunk = events[start : start + DELIVERY_CHUNK]
            # One handler may take several event types (all of an order's, say); its consumers
            # compare equal, so it takes all of them in one transaction, in the order they
            # happened.
            takes: dict[Consumer, list[Event]] = {}
            for event in chunk:
                for consumer in self.consumers.get(event.type, []):
                    if consumer.wants(event):
                        takes.setdefault(consumer, []).append(event)
            failed: set[str] = set()
            for consumer, taken in takes.items():
                failed |= await self._deliver_to(consumer, taken)
            await self._mark_delivered([event for event in chunk if event.id not in failed])

    async def _deliver_to(self, consumer: Consumer, events: list[Event]) -> set[str]:
        """Apply events in one transaction; the ids of those that could not be applied."""
        from recur.kit.db import UnitOfWork

        try:
            async with UnitOfWork(self.db, self) as uow:
                fresh = await self._take(uow, consumer.inbox, events)
                if consumer.batch_handler is not None and len(fresh) > 1:
                    await consumer.batch_handler(uow, fresh)
                else:
                    for event in fresh:
                        await consumer.handler(uow, event)
                await uow.commit()
            return set()
        except Exception:
            if len(events) > 1:
                # Left undelivered by none but the bad ones: take them again one at a time.
                failed: set[str] = set()
                for event in events:
                    failed |= await self._deliver_to(consumer, [event])
                return failed
            # Left undelivered: the sweeper delivers it again, and the inbox keeps the
            # consumers that did apply it from applying it twice.
            event = events[0]
            log.exception("consumer %s failed on %s %s", consumer.service, event.type, event.id)
            return {event.id}

    async def _take(self, uow: UnitOfWork, inbox: sa.Table, events: list[Event]) -> list[Event]:
        """Record the events in the consumer's inbox; those it had not received before."""
        received = self.clock.now()
        stmt = insert_ignoring_conflicts(uow.conn, inbox).returning(inbox.c.event_id)
        rows = [{"event_id": event.id, "received_at": received} for event in events]
        new = set((await uow.execute(stmt, rows)).scalars())
        return [event for event in events if event.id in new]

    async def _mark_delivered(self, events: list[Event]) -> None:
        from recur.kit.db import UnitOfWork

        by_service: dict[str, list[str]] = defaultdict(list)
        for event in events:
            by_service[event.service].append(event.id)
        if not by_service:
            return
        async with UnitOfWork(self.db) as uow:
            for service, ids in by_service.items():
                table = self.outboxes[service].table
                await uow.execute(
                    sa.update(table)
                    .where(table.c.id.in_(ids))
                    .values(delivered_at=self.clock.now())
                )
            await uow.commit()

    async def redeliver_pending(self, older_than: timedelta = timedelta(seconds=5)) -> int:
        """Deliver events left undelivered (a crash after commit, a failed consumer).
        With a transport: relay those of this process's services, and trim their streams."""
        from recur.kit.db import UnitOfWork

        if self.transport is not None:
            return await self._relay_pending(older_than)
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
            events = [_event(outbox.service, r) for r in rows]
            await self.deliver(events)
            delivered += len(events)
        return delivered

    # The relay and the consumer groups, with a transport (see kit/streams.py).

    async def _relay(self, events: list[Event]) -> None:
        assert self.transport is not None
        for start in range(0, len(events), DELIVERY_CHUNK):
            chunk = events[start : start + DELIVERY_CHUNK]
            try:
                await self.transport.publish(chunk)
            except (RedisError, OSError) as error:
                # Left unmarked: the relay sweep of the service's processes publishes them.
                self._redis_failed("publish", error)
                return
            self._redis_ok()
            await self._mark_delivered(chunk)

    async def _relay_pending(self, older_than: timedelta) -> int:
        from recur.kit.db import UnitOfWork

        assert self.transport is not None
        outboxes = [o for o in self.outboxes.values() if self._local(o.service)]
        relayed = 0
        try:
            if await self.transport.lost_data():
                log.warning("redis lost its streams: relaying again %s", self.replay_window)
                for outbox in outboxes:
                    relayed += await self._replay(outbox, self.clock.now() - self.replay_window)
            cutoff = self.clock.now() - older_than
            for outbox in outboxes:
                table = outbox.table
                async with UnitOfWork(self.db) as uow:
                    # Locked, so the other instances of the service relay other rows meanwhile.
                    rows = await uow.fetch_all(
                        sa.select(table)
                        .where(table.c.delivered_at.is_(None), table.c.created <= cutoff)
                        .order_by(table.c.created, table.c.id)
                        .limit(DELIVERY_CHUNK)
                        .with_for_update(skip_locked=True)
                    )
                    events = [_event(outbox.service, r) for r in rows]
                    await self.transport.publish(events)
                    if events:
                        await uow.execute(
                            sa.update(table)
                            .where(table.c.id.in_([e.id for e in events]))
                            .values(delivered_at=self.clock.now())
                        )
                    await uow.commit()
                relayed += len(events)
                await self.transport.trim(outbox.service)
        except (RedisError, OSError) as error:
            self._redis_failed("relay", error)
            return relayed
        self._redis_ok()
        return relayed

    async def _replay(self, outbox: Outbox, since: datetime) -> int:
        """Publish again every event of `outbox` recorded since `since`, in order."""
        from recur.kit.db import UnitOfWork

        assert self.transport is not None
        table = outbox.table
        after: tuple[datetime, str] | None = None
        count = 0
        while True:
            query = sa.select(table).where(table.c.created >= since)
            if after is not None:
                query = query.where(sa.tuple_(table.c.created, table.c.id) > after)
            async with UnitOfWork(self.db) as uow:
                rows = await uow.fetch_all(
                    query.order_by(table.c.created, table.c.id).limit(DELIVERY_CHUNK)
                )
            if not rows:
                return count
            await self.transport.publish([_event(outbox.service, r) for r in rows])
            count += len(rows)
            after = (rows[-1].created, rows[-1].id)

    async def consume(self, group: str, *, claim: bool = False) -> int:
        """Apply what `group` (a service) has to read: new entries, or with `claim` those left
        unacknowledged by a consumer that died or failed. The entries applied are acknowledged;
        those a consumer failed on stay pending. How many entries were read."""
        assert self.transport is not None
        entries = await self.transport.read(group, claim=claim)
        if not entries:
            return 0
        events: dict[str, Event] = {}
        for _stream, _eid, data in entries:
            events.setdefault(data["id"], Event(**data))
        takes: dict[Consumer, list[Event]] = {}
        for event in events.values():
            for consumer in self.consumers.get(event.type, []):
                if consumer.service == group and consumer.wants(event):
                    takes.setdefault(consumer, []).append(event)
        failed: set[str] = set()
        for consumer, taken in takes.items():
            failed |= await self._deliver_to(consumer, taken)
        await self.transport.ack(
            group, [(stream, eid) for stream, eid, data in entries if data["id"] not in failed]
        )
        return len(entries)

    async def consume_forever(self, claim_every_seconds: float = 5.0) -> None:
        """Apply this process's services' events as they come, until cancelled."""
        assert self.transport is not None
        groups = sorted(
            {c.service for cs in self.consumers.values() for c in cs if self._local(c.service)}
        )
        if not groups:
            return
        claim_every_seconds = min(claim_every_seconds, self.transport.claim_idle_ms / 1000)
        last_claim = 0.0
        while True:
            try:
                claim = time.monotonic() - last_claim >= claim_every_seconds
                for group in groups:
                    if claim:
                        while await self.consume(group, claim=True):
                            pass
                    await self.consume(group)
                if claim:
                    last_claim = time.monotonic()
                self._redis_ok()
            except (RedisError, OSError) as error:
                self._redis_failed("read", error)
                await sleep_after_error("read", error)

    def _redis_failed(self, what: str, error: BaseException) -> None:
        if not self._redis_down:
            self._redis_down = True
            log.warning("redis unreachable, events kept in the outboxes (%s: %s)", what, error)

    def _redis_ok(self) -> None:
        if self._redis_down:
            self._redis_down = False
            log.info("redis reachable again, events flow through the streams")


def _event(service: str, row: Any) -> Event:
    return Event(row.id, service, row.tenant_id, row.type, row.payload, row.created)
