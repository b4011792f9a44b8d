"""Which process is carrying out a request with an Idempotency-Key, so that a key left in flight
by a process that died can be told from one still running.

A key is claimed in the database (a row without a response yet) before its request runs. If the
process running it dies, the row says "in flight" forever, and every retry of the key, on any
instance, would be a 409 `idempotency_key_in_use`. So each process also holds, from before it
claims a key until the response is stored, a PostgreSQL session advisory lock on the key, on one
connection of its own. PostgreSQL drops a session's locks when its connection goes, so the
process that finds a key in flight and gets its lock knows the claim was abandoned and carries
the request out itself; one that cannot get the lock knows the key is running elsewhere.

Only on PostgreSQL: on SQLite one process serves, and keys in flight stay as they were.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from recur.kit.db import Database

log = logging.getLogger("recur.gateway.idempotency")

# How long a request waits for the lock of a key that another request holds before it is
# answered 409 in use: a process that has just died needs a moment for PostgreSQL to notice its
# connection is gone, and a duplicate sent while the first one finishes gets its replay.
WAIT_SECONDS = 1.0
_POLL_SECONDS = 0.05


def lock_id(tenant_id: str, key: str) -> int:
    """The key's 64-bit advisory lock id."""
    digest = hashlib.sha256(f"idempotency\0{tenant_id}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class KeyLocks:
    """This process's advisory locks on the Idempotency-Keys it is carrying out. The
    connection holding them is taken from the pool with the first lock and given back when the
    last one is released, so an idle process holds no connection for them."""

    def __init__(self, db: Database):
        self._db = db
        self.enabled = db.dialect == "postgresql"
        self._held: set[int] = set()
        self._conn: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under _conn
        self._mutex = asyncio.Lock()  # one statement at a time on the connection

    async def acquire(self, tenant_id: str, key: str) -> bool | None:
        """Take the key's lock: True when this request holds it now, False when another request
        (here or in another process) held it throughout WAIT_SECONDS, None when there are no
        locks here (not PostgreSQL, or the database failed: the key is then handled without)."""
        if not self.enabled:
            return None
        lock = lock_id(tenant_id, key)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while True:
            got = await self._try_lock(lock)
            if got is None or got:
                return got
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(_POLL_SECONDS)

    async def release(self, tenant_id: str, key: str) -> None:
        """Let go of a lock `acquire` gave."""
        lock = lock_id(tenant_id, key)
        async with self._mutex:
            if lock not in self._held:
                return
            self._held.discard(lock)
            if self._driver is not None:
                try:
                    await self._driver.fetchval("SELECT pg_advisory_unlock($1)", lock)
                except Exception:
                    await self._drop("unlocking")
                    return
            if not self._held:
                await self._give_back()

    async def _try_lock(self, lock: int) -> bool | None:
        async with self._mutex:
            # A session's advisory locks are re-entrant: another request of this process that
            # holds the key is seen here, not by PostgreSQL.
            if lock in self._held:
                return False
            try:
                if self._conn is None:
                    self._conn = await self._db.engine.connect()
                    raw = await self._conn.get_raw_connection()
                    self._driver = raw.driver_connection
                got = bool(await self._driver.fetchval("SELECT pg_try_advisory_lock($1)", lock))
            except Exception:
                await self._drop("locking")
                return None
            if got:
                self._held.add(lock)
            elif not self._held:
                await self._give_back()
            return got

    async def _give_back(self) -> None:
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            await conn.close()

    async def _drop(self, doing: str) -> None:
        # Whatever the driver raised, the connection is in doubt: it is thrown away (its
        # locks go with it) and the keys are handled without locks until a new one works.
        log.warning("idempotency key locks unavailable (%s)", doing, exc_info=True)
        conn, self._conn, self._driver = self._conn, None, None
        self._held.clear()
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:
                log.debug("closing a failed lock connection", exc_info=True)
