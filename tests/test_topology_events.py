"""Events through Redis Streams in a real topology (`recur cluster up`, PostgreSQL, Redis): an
instance killed while it holds events it has read but not acknowledged loses none of them, and
none is applied twice."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from .conftest import PG_URL, REDIS_URL

# The cluster's fixtures, shared with its own tests.
from .test_cluster import _recur, cluster_env, empty_postgres_url  # noqa: F401

ORDERS = 120


def _pid_of(consumer: str) -> int:
    """The process id in a consumer's name (`host-pid-random`)."""
    return int(consumer.rsplit("-", 2)[1])


async def _kill_holding_events(
    redis: Redis, stream: str, pids: set[int], deadline: float
) -> tuple[int, int]:
    """SIGKILL an instance of `pids` at a moment it holds entries of `stream` read and not yet
    acknowledged by the orders group: stopped first, checked, then killed. (pid, entries)."""
    while time.monotonic() < deadline:
        summary = await redis.xpending(stream, "orders")
        for consumer in summary["consumers"]:
            name = consumer["name"].decode()
            pid = _pid_of(name)
            if pid not in pids or not int(consumer["pending"]):
                continue
            os.killpg(pid, signal.SIGSTOP)
            held = await redis.xpending_range(stream, "orders", "-", "+", 1000, consumername=name)
            if held:
                os.killpg(pid, signal.SIGKILL)
                return pid, len(held)
            os.killpg(pid, signal.SIGCONT)  # it acknowledged them before it stopped
        await asyncio.sleep(0.002)
    raise AssertionError("no orders instance was caught holding events")


@pytest.mark.skipif(PG_URL is None or REDIS_URL is None, reason="PostgreSQL and Redis needed")
async def test_an_instance_killed_mid_stream_loses_no_event_and_applies_none_twice(
    cluster_env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    assert REDIS_URL is not None
    prefix = f"test:{secrets.token_hex(6)}:"
    cluster_env.update(
        RECUR_REDIS_URL=REDIS_URL,
        RECUR_EVENT_STREAM_PREFIX=prefix,
        RECUR_EVENT_CLAIM_IDLE_SECONDS="2",
        RECUR_OUTBOX_SWEEP_INTERVAL_SECONDS="1",
        RECUR_RATE_LIMIT_PER_SECOND="10000",
        RECUR_RATE_LIMIT_BURST="10000",
    )
    started = _recur(
        tmp_path, cluster_env, "cluster", "up", "--instances", "2", "--state-dir", "tmp"
    )
    assert started.returncode == 0, started.stdout + started.stderr
    state = json.loads((tmp_path / "tmp" / "cluster.json").read_text())
    gateway = state["gateways"][0]
    orders_pids = {p["pid"] for p in state["processes"] if p["role"] == "orders"}
    assert len(orders_pids) == 2
    issued = _recur(tmp_path, cluster_env, "keys", "create", "--tenant", "acme")
    assert issued.returncode == 0, issued.stdout + issued.stderr
    auth = {"Authorization": f"Bearer {issued.stdout.strip().splitlines()[-1]}"}

    redis = Redis.from_url(REDIS_URL)
    async with httpx.AsyncClient(base_url=gateway, headers=auth, timeout=30) as http:

        async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            key = {"Idempotency-Key": secrets.token_hex(12)}
            response = await http.post(path, json=body, headers=key)
            assert response.status_code == 200, (path, response.status_code, response.text)
            result: dict[str, Any] = response.json()
            return result

        customer = await post("/v1/customers", {"currency": "USD"})
        card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040}
        await post(f"/v1/customers/{customer['id']}/payment-methods", {"card": card})

        async def buy(i: int) -> dict[str, Any]:
            line = {"description": f"item {i}", "unit_amount": 100 + i}
            order = await post("/v1/orders", {"customer_id": customer["id"], "lines": [line]})
            await post(
                "/v1/payments",
                {
                    "customer_id": customer["id"],
                    "order_id": order["id"],
                    "amount": order["total"],
                    "currency": "USD",
                },
            )
            return order

        async def load() -> list[dict[str, Any]]:
            gate = asyncio.Semaphore(4)

            async def one(i: int) -> dict[str, Any]:
                async with gate:
                    return await buy(i)

            return await asyncio.gather(*(one(i) for i in range(ORDERS)))

        loading = asyncio.create_task(load())
        killed, held = await _kill_holding_events(
            redis, prefix + "payments", orders_pids, time.monotonic() + 60
        )
        orders = await loading
        assert held >= 1 and killed in orders_pids

        # Every payment reaches its order once: paid, and paid exactly its total.
        deadline = time.monotonic() + 60
        pending = {o["id"]: o for o in orders}
        while pending and time.monotonic() < deadline:
            for order_id in list(pending):
                seen = (await http.get(f"/v1/orders/{order_id}")).json()
                if seen["status"] == "paid":
                    assert seen["amount_paid"] == pending.pop(order_id)["total"], seen
            await asyncio.sleep(0.2)
        assert not pending, f"{len(pending)} orders never learned of their payment"

    # The dead instance's entries were taken over and acknowledged by the live one.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (await redis.xpending(prefix + "payments", "orders"))["pending"] == 0:
            break
        await asyncio.sleep(0.2)
    assert (await redis.xpending(prefix + "payments", "orders"))["pending"] == 0
    # A live instance shows each group's backlog on its /metrics.
    [alive] = [p["url"] for p in state["processes"] if p["role"] == "orders" and p["pid"] != killed]
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{alive}/metrics")).text
    assert 'recur_event_stream_backlog{group="orders",stream="payments"} 0.0' in metrics
    keys = [k async for k in redis.scan_iter(match=prefix + "*")]
    await redis.delete(*keys)
    await redis.aclose()

    verified = _recur(tmp_path, cluster_env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
