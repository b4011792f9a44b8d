"""An Idempotency-Key left in flight by a process that died is carried out by the next request
with it (PostgreSQL: the dead process's advisory lock went with its connection); one whose
request still runs in a live process is a 409, as before."""

from __future__ import annotations

import asyncio
import hashlib

import sqlalchemy as sa

from recur.gateway.key_locks import lock_id
from recur.gateway.tables import idempotency_keys
from recur.kit.db import UnitOfWork
from recur.runtime import Runtime

BODY = b'{"name": "Ada", "currency": "USD"}'


async def _left_in_flight(runtime: Runtime, tenant_id: str, key: str) -> None:
    """The row a process leaves when it claimed `key` for BODY and died before answering."""
    digest = hashlib.sha256(b"\n".join([b"/v1/customers", b"", BODY])).hexdigest()
    async with UnitOfWork(runtime.db) as uow:
        await uow.execute(
            sa.insert(idempotency_keys).values(
                tenant_id=tenant_id, key=key, request_hash=digest, created=runtime.clock.now()
            )
        )
        await uow.commit()


async def _post(api, key: str):  # type: ignore[no-untyped-def]
    return await api.post(
        "/v1/customers",
        content=BODY,
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
    )


async def test_a_key_left_in_flight_by_a_dead_process(api, tenant, runtime: Runtime) -> None:
    await _left_in_flight(runtime, tenant.id, "abandoned")
    first = await _post(api, "abandoned")
    if runtime.db.dialect != "postgresql":
        # One process serves on SQLite: a key in flight is in flight.
        assert first.status_code == 409
        assert first.json()["error"]["code"] == "idempotency_key_in_use"
        return
    assert first.status_code == 200, first.text
    again = await _post(api, "abandoned")
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["id"] == first.json()["id"]
    # Another body with the key is still refused.
    other = await api.post(
        "/v1/customers", json={"name": "Bob"}, headers={"Idempotency-Key": "abandoned"}
    )
    assert other.json()["error"]["code"] == "idempotency_key_reused"


async def test_a_key_running_in_a_live_process_is_in_use(api, tenant, runtime: Runtime) -> None:
    if runtime.db.dialect != "postgresql":
        return  # no advisory locks: the test above covers SQLite
    await _left_in_flight(runtime, tenant.id, "running")
    # Another process is carrying the key out: it holds the key's lock on its connection.
    async with runtime.db.engine.connect() as other_process:
        raw = (await other_process.get_raw_connection()).driver_connection
        assert await raw.fetchval("SELECT pg_try_advisory_lock($1)", lock_id(tenant.id, "running"))
        busy = await _post(api, "running")
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "idempotency_key_in_use"
        await raw.fetchval("SELECT pg_advisory_unlock($1)", lock_id(tenant.id, "running"))
    # It died without answering: the key's next request carries it out.
    taken_over = await _post(api, "running")
    assert taken_over.status_code == 200, taken_over.text
    listed = await api.get("/v1/customers")
    assert [c["name"] for c in listed.json()["data"]] == ["Ada"]


async def test_the_same_key_twice_at_once_is_carried_out_once(api, runtime: Runtime) -> None:
    first, second = await asyncio.gather(_post(api, "twice"), _post(api, "twice"))
    statuses = sorted([first.status_code, second.status_code])
    assert statuses in ([200, 200], [200, 409]), (first.text, second.text)
    listed = await api.get("/v1/customers")
    assert [c["name"] for c in listed.json()["data"]] == ["Ada"]
    if statuses == [200, 200]:  # the second waited for the first, and got its answer
        assert first.json()["id"] == second.json()["id"]
        replayed = [r.headers.get("Idempotent-Replayed") for r in (first, second)]
        assert replayed.count("true") == 1
