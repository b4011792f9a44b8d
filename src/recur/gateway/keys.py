"""Tenants and their secret API keys."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from recur.gateway.tables import api_keys, tenants
from recur.kit.clock import Clock
from recur.kit.db import Database, UnitOfWork
from recur.kit.ids import new_id


@dataclass(frozen=True)
class IssuedKey:
    tenant_id: str
    tenant_name: str
    key_id: str
    secret: str


def hash_secret(secret: str) -> str:
    # A key is 256 random bits, so a fast hash is enough: there is nothing to brute-force,
    # and a lookup by hash costs one index probe per request.
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_key(db: Database, clock: Clock, tenant_name: str) -> IssuedKey:
    """Create the tenant if it does not exist, and a new secret key for it."""
    tenant_name = tenant_name.strip()
    if not tenant_name:
        raise ValueError("a tenant needs a name")
    now = clock.now()
    async with UnitOfWork(db) as uow:
        row = await uow.fetch_one(sa.select(tenants.c.id).where(tenants.c.name == tenant_name))
        if row is None:
            tenant_id = new_id("ten")
            await uow.execute(
                sa.insert(tenants).values(id=tenant_id, name=tenant_name, created=now)
            )
        else:
            tenant_id = row.id
        secret = "sk_" + secrets.token_urlsafe(32)
        key_id = new_id("key")
        await uow.execute(
            sa.insert(api_keys).values(
                id=key_id,
                tenant_id=tenant_id,
                secret_hash=hash_secret(secret),
                prefix=secret[:10],
                created=now,
            )
        )
        await uow.commit()
    return IssuedKey(tenant_id, tenant_name, key_id, secret)


async def revoke_key(db: Database, clock: Clock, key_id: str) -> bool:
    """Revoke a key (for good); False when there is no such key or it was revoked before.
    A process that resolved it lately (any gateway or service process) goes on accepting it
    until its cache entry expires, KEY_CACHE_SECONDS at most; `KeyResolver.revoke` also forgets
    it at once in its own process."""
    async with UnitOfWork(db) as uow:
        result = await uow.execute(
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=clock.now())
        )
        await uow.commit()
    return bool(result.rowcount == 1)


# How long a resolved key is taken on trust before the database is asked again: a key revoked
# elsewhere stops working in this process within this time.
KEY_CACHE_SECONDS = 10.0


class KeyResolver:
    """Secret key -> (tenant id, key id), cached in process for KEY_CACHE_SECONDS: a key is
    checked on every request, its row changes only when it is revoked."""

    def __init__(
        self,
        db: Database,
        cache_size: int = 10_000,
        ttl_seconds: float = KEY_CACHE_SECONDS,
        now: Callable[[], float] = time.monotonic,
    ):
        self._db = db
        # digest of the secret -> (tenant id, key id, expiry on `now`'s scale)
        self._cache: dict[str, tuple[str, str, float]] = {}
        self._cache_size = cache_size
        self._ttl = ttl_seconds
        self._now = now

    async def resolve(self, secret: str) -> tuple[str, str] | None:
        digest = hash_secret(secret)
        hit = self._cache.get(digest)
        if hit is not None:
            tenant_id, key_id, expires = hit
            if self._now() < expires:
                return tenant_id, key_id
            del self._cache[digest]
        async with UnitOfWork(self._db) as uow:
            row = await uow.fetch_one(
                sa.select(api_keys.c.tenant_id, api_keys.c.id).where(
                    api_keys.c.secret_hash == digest, api_keys.c.revoked_at.is_(None)
                )
            )
        if row is None:
            return None
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[digest] = (row.tenant_id, row.id, self._now() + self._ttl)
        return row.tenant_id, row.id

    async def revoke(self, clock: Clock, key_id: str) -> bool:
        """Revoke the key (see `revoke_key`) and forget it here at once."""
        revoked = await revoke_key(self._db, clock, key_id)
        self.forget(key_id)
        return revoked

    def forget(self, key_id: str) -> None:
        """Drop the key from this process's cache: its next use asks the database."""
        for digest in [d for d, (_, k, _) in self._cache.items() if k == key_id]:
            del self._cache[digest]
