"""The key-to-tenant lookup is cached per process for a short time, and revocation: at once in
the process that revokes, within the cache's time everywhere else."""

from __future__ import annotations

import asyncio

from typer.testing import CliRunner

from recur.cli import app as cli
from recur.gateway.keys import KEY_CACHE_SECONDS, KeyResolver, create_key, revoke_key
from recur.kit.db import Database
from recur.runtime import Runtime


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_resolved_key_is_trusted_until_its_cache_entry_expires(runtime: Runtime) -> None:
    issued = await create_key(runtime.db, runtime.clock, "acme")
    time = FakeTime()
    here = KeyResolver(runtime.db, now=time)
    resolved = (issued.tenant_id, issued.key_id)
    assert await here.resolve(issued.secret) == resolved
    assert await here.resolve("sk_no_such_key") is None

    # Revoked by another process: this one does not ask the database again for a while...
    assert await revoke_key(runtime.db, runtime.clock, issued.key_id)
    time.now += KEY_CACHE_SECONDS - 1
    assert await here.resolve(issued.secret) == resolved
    # ...and refuses the key once its entry has expired.
    time.now += 1
    assert await here.resolve(issued.secret) is None
    assert await KeyResolver(runtime.db).resolve(issued.secret) is None
    assert not await revoke_key(runtime.db, runtime.clock, issued.key_id)


async def test_revoking_through_the_resolver_takes_effect_at_once(runtime: Runtime) -> None:
    kept = await create_key(runtime.db, runtime.clock, "acme")
    revoked = await create_key(runtime.db, runtime.clock, "acme")
    elsewhere = KeyResolver(runtime.db, now=FakeTime())
    here = KeyResolver(runtime.db, now=FakeTime())
    for resolver in (here, elsewhere):
        for issued in (kept, revoked):
            assert await resolver.resolve(issued.secret) == (issued.tenant_id, issued.key_id)

    assert await here.revoke(runtime.clock, revoked.key_id)
    assert await here.resolve(revoked.secret) is None
    assert await here.resolve(kept.secret) == (kept.tenant_id, kept.key_id)
    # Another process's cache still holds it until the entry expires (the test above).
    assert await elsewhere.resolve(revoked.secret) == (revoked.tenant_id, revoked.key_id)
    assert not await here.revoke(runtime.clock, revoked.key_id)


def test_keys_revoke_cli(database_url: str, monkeypatch) -> None:
    monkeypatch.setenv("RECUR_DATABASE_URL", database_url)
    created = CliRunner().invoke(cli, ["keys", "create", "--tenant", "acme"])
    assert created.exit_code == 0, created.output
    key_id = created.output.split("key ")[1].split()[0]
    secret = created.output.strip().splitlines()[-1]

    revoked = CliRunner().invoke(cli, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    assert f"within {KEY_CACHE_SECONDS:.0f} s" in " ".join(revoked.output.split())
    again = CliRunner().invoke(cli, ["keys", "revoke", key_id])
    assert again.exit_code == 1
    assert "no key" in again.output

    async def refused() -> bool:
        db = Database(database_url)
        try:
            return await KeyResolver(db).resolve(secret) is None
        finally:
            await db.dispose()

    assert asyncio.run(refused())
