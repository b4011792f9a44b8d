"""Events between processes: each service's outbox relayed to a Redis Stream, read by consumer
groups.

In the distributed topology the process that commits an event is rarely the one whose consumer
must apply it (an order paid in an orders process moves a subscription in a subscriptions
process). So there, the event bus publishes instead of delivering:

- **Relay.** After a commit, the events go to the stream of the service that recorded them,
  `recur:events:<service>` (one XADD each, in one pipeline), and their outbox rows are marked
  delivered, which in this mode means relayed. Events that could not be relayed (Redis down,
  the process killed between the commit and the XADD) stay unmarked, and the relay sweep of
  any process of that service relays them later. An event relayed twice is harmless: see below.
- **Consumer groups.** Each service reads every stream in a consumer group named after itself,
  so every event reaches each service once, whichever of its instances takes it. Each instance
  is a consumer of its own name in the group. It applies what it read through the bus's
  consumers (each consumer's inbox keeps an event from being applied twice), then XACKs it.
  An event a consumer failed on is not acknowledged.
- **At least once.** An event read by an instance that died before its XACK (or not acked after
  a failure) stays in the group's pending list. Any instance claims those idle for longer than
  the claim time (XAUTOCLAIM) and applies them again; the inbox makes that safe.
- **Trimming.** Every group is created when the first instance starts (from the start of the
  stream), so entries older than what every group has read and acknowledged are no longer
  needed; the relay sweep trims them (XTRIM MINID).
- **Redis losing its data.** Streams live in Redis' memory; run it with `appendonly yes` (the
  deploy files do). Should a Redis restart without its data all the same, the relay notices (the
  epoch key it wrote is gone) and relays again the events of the last replay window, which the
  inboxes make safe.

redis-py has the stream commands but nothing that runs consumer groups (claiming, acking,
trimming by the groups' progress), so that is written here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

log = logging.getLogger("recur.streams")

STREAM_PREFIX = "recur:events:"
# Entries read per XREADGROUP and per XAUTOCLAIM.
READ_COUNT = 500


def encode(event: Any) -> bytes:
    """An event as one stream field."""
    return orjson.dumps(
        {
            "id": event.id,
            "service": event.service,
            "tenant_id": event.tenant_id,
            "type": event.type,
            "payload": event.payload,
            "created": event.created.isoformat(),
        }
    )


def decode(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(raw)
    data["created"] = datetime.fromisoformat(data["created"])
    return data


@dataclass
class StreamTransport:
    """The Redis side of the relay and of the consumer groups, for one process."""

    redis: Redis
    # The services that have consumers: one group each on every stream.
    groups: tuple[str, ...]
    # Every service's stream (all four, whoever records events there).
    services: tuple[str, ...]
    # This process's name in the groups: where it runs, then what makes it unique.
    consumer: str = field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )
    claim_idle_ms: int = 30_000
    block_ms: int = 1_000
    # Every key this transport uses starts with it.
    prefix: str = STREAM_PREFIX
    _groups_ready: bool = False
    _epoch: bytes | None = None

    @classmethod
    def from_url(
        cls, url: str, *, groups: Iterable[str], services: Iterable[str], **kwargs: Any
    ) -> StreamTransport:
        # A socket timeout above the longest blocking read, so a quiet stream is no error.
        redis = Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0)
        return cls(redis, tuple(sorted(set(groups))), tuple(services), **kwargs)

    def stream(self, service: str) -> str:
        return self.prefix + service

    async def ensure_groups(self) -> None:
        """Create every group on every stream (from its start) unless it exists."""
        if self._groups_ready:
            return
        for service in self.services:
            for group in self.groups:
                try:
                    await self.redis.xgroup_create(
                        self.stream(service), group, id="0", mkstream=True
                    )
                except ResponseError as error:
                    if "BUSYGROUP" not in str(error):
                        raise
        self._groups_ready = True

    async def publish(self, events: list[Any]) -> None:
        """XADD each event to its service's stream, in one round trip. Raises on a Redis error,
        and then none may be taken as relayed."""
        if not events:
            return
        await self.ensure_groups()
        async with self.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.xadd(self.stream(event.service), {"e": encode(event)})
            await pipe.execute()

    async def read(self, group: str, *, claim: bool) -> list[tuple[str, bytes, dict[str, Any]]]:
        """Entries for this consumer in `group`: new ones (blocking up to `block_ms`), or with
        `claim` those idle in any consumer's pending list longer than the claim time. Each is
        (stream, entry id, event fields)."""
        await self.ensure_groups()
        taken: list[tuple[str, bytes, dict[str, Any]]] = []
        if claim:
            for service in self.services:
                name = self.stream(service)
                _next, entries, *_deleted = await self.redis.xautoclaim(
                    name, group, self.consumer, self.claim_idle_ms, "0-0", count=READ_COUNT
                )
                taken += [(name, eid, decode(f[b"e"])) for eid, f in entries if f]
            return taken
        reply: Any = await self.redis.xreadgroup(
            group,
            self.consumer,
            {self.stream(s): ">" for s in self.services},
            count=READ_COUNT,
            block=self.block_ms,
        )
        for name, entries in reply or []:
            taken += [(_text(name), eid, decode(f[b"e"])) for eid, f in entries if f]
        return taken

    async def ack(self, group: str, entries: list[tuple[str, bytes]]) -> None:
        by_stream: dict[str, list[bytes]] = {}
        for stream, eid in entries:
            by_stream.setdefault(stream, []).append(eid)
        if not by_stream:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, group, *ids)
            await pipe.execute()

    async def trim(self, service: str) -> int:
        """Drop the entries of `service`'s stream that every group has read and acknowledged."""
        name = self.stream(service)
        groups = {_text(g["name"]): g for g in await self.redis.xinfo_groups(name)}
        if set(self.groups) - set(groups):
            return 0  # a group not created yet would still read from the start
        floor: bytes | None = None
        for group, info in groups.items():
            oldest = info["last-delivered-id"]
            if info["pending"]:
                # None when the group acknowledged them since: then all it read is done.
                oldest = (await self.redis.xpending(name, group))["min"] or oldest
            oldest = oldest if isinstance(oldest, bytes) else str(oldest).encode()
            if floor is None or _entry_key(oldest) < _entry_key(floor):
                floor = oldest
        if floor is None or floor == b"0-0":
            return 0
        return int(await self.redis.xtrim(name, minid=floor, approximate=False))

    async def lost_data(self) -> bool:
        """Whether Redis lost its data since this process last looked (its epoch key is gone
        or was written anew). The first look only records the epoch."""
        epoch = secrets.token_hex(8).encode()
        await self.redis.set(self.prefix + "epoch", epoch, nx=True)
        current: Any = await self.redis.get(self.prefix + "epoch")
        seen, self._epoch = self._epoch, current
        if seen is not None and current != seen:
            self._groups_ready = False
            return True
        return False

    async def pending(self) -> dict[tuple[str, str], int]:
        """Per (stream's service, group): entries read but not acknowledged yet, plus entries
        not read yet (Redis' `lag`)."""
        out: dict[tuple[str, str], int] = {}
        for service in self.services:
            try:
                infos = await self.redis.xinfo_groups(self.stream(service))
            except ResponseError:
                continue  # no stream yet
            for info in infos:
                lag = info.get("lag") or 0
                out[(service, _text(info["name"]))] = int(info["pending"]) + int(lag)
        return out

    async def close(self) -> None:
        await self.redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_key(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq or 0)


async def sleep_after_error(what: str, error: BaseException, seconds: float = 1.0) -> None:
    log.warning("event stream %s failed (%s); trying again", what, error)
    await asyncio.sleep(seconds)


__all__ = ["RedisError", "StreamTransport", "sleep_after_error"]
