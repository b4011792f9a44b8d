"""The distributed topology as `recur cluster up --instances 2` starts it, on PostgreSQL and a
Redis of its own: the whole flow through a gateway, instances killed under load without a failed
request, Redis stopped and started again under load, and one rate limit shared by both gateways.

Each test brings up its own cluster (own database, own redis-server on a free port, own state
directory) and waits on health with deadlines, never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import sqlalchemy as sa
from multidict import CIMultiDict

from recur.gateway.keys import create_key
from recur.kit.clock import SystemClock
from recur.kit.db import Database, UnitOfWork
from recur.subscriptions.tables import subscriptions

from .conftest import PG_URL, REQUIRE, _worker_suffix

RECUR = [str(Path(sys.executable).with_name("recur"))]
REDIS_SERVER = shutil.which("redis-server")
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}

if REQUIRE and REDIS_SERVER is None:
    raise RuntimeError("RECUR_TEST_REQUIRE_SERVICES=1 but redis-server is not installed")

pytestmark = [
    pytest.mark.skipif(PG_URL is None, reason="PostgreSQL not configured"),
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(what: str, done: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.05)


class RedisServer:
    """A redis-server of the test's own, on a free port, keeping nothing on disk."""

    def __init__(self, workdir: Path):
        self.port = _free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def answers(self) -> bool:
        with contextlib.suppress(redis.RedisError), self.client() as client:
            return bool(client.ping())
        return False

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        _wait("redis-server answering", self.answers)

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, as an operator stops it; killed if it does not go."""
        if self.process is None:
            return
        # Sent by hand: a Redis client reconnects, with back-off, to see the server gone.
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(b"SHUTDOWN NOSAVE\r\n")
            s.recv(1)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@dataclass
class Topology:
    database_url: str
    state_dir: Path
    gateways: list[str]
    processes: list[dict[str, Any]]

    def instances(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.processes if p["role"] == role]

    async def api_key(self, tenant: str) -> tuple[str, str]:
        """A new tenant's (secret, key id), issued in the cluster's database."""
        db = Database(self.database_url)
        try:
            issued = await create_key(db, SystemClock(), tenant)
        finally:
            await db.dispose()
        return issued.secret, issued.key_id

    def kill(self, process: dict[str, Any]) -> None:
        """SIGKILL the process's group, and wait until it is gone."""
        os.killpg(process["pid"], signal.SIGKILL)
        _wait(f"{process['name']} gone", lambda: _gone(process["pid"]), 10)

    def log(self, name: str) -> str:
        return (self.state_dir / f"{name}.log").read_text(errors="replace")

    def warnings(self) -> list[str]:
        """Every process's warnings and errors: why a request failed, for a failing test."""
        return [
            line
            for path in sorted(self.state_dir.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line
        ]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """`cluster(**env)`: `recur cluster up --instances 2` on a new database and a new
    redis-server, with RECUR_* settings `env` on top; stopped, and both removed, after the
    test. The redis-server is `cluster.redis`."""
    assert PG_URL is not None
    base, _, name = PG_URL.rpartition("/")
    db_name = f"{name}_{_worker_suffix()}_{request.node.name.removeprefix('test_')[:20]}"
    url = f"{base}/{db_name}"
    state_dir = tmp_path / "cluster"
    redis_server = RedisServer(tmp_path / "redis")

    async def admin(*statements: str) -> None:
        engine = sa.ext.asyncio.create_async_engine(
            f"{base}/postgres", isolation_level="AUTOCOMMIT"
        )
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
        await engine.dispose()

    asyncio.run(
        admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)', f'CREATE DATABASE "{db_name}"')
    )
    redis_server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECUR_")}
    env.update(
        RECUR_DATABASE_URL=url,
        RECUR_REDIS_URL=redis_server.url,
        RECUR_BILL_RUN_INTERVAL_SECONDS="3600",
        RECUR_GATEWAY_HEALTH_INTERVAL_SECONDS="1",
        COLUMNS="200",
    )

    def up(**settings: str) -> Topology:
        env.update(settings)
        started = subprocess.run(
            [*RECUR, "cluster", "up", "--instances", "2", "--state-dir", str(state_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert started.returncode == 0, started.stdout + started.stderr
        state = json.loads((state_dir / "cluster.json").read_text())
        return Topology(url, state_dir, state["gateways"], state["processes"])

    up.redis = redis_server  # type: ignore[attr-defined]
    try:
        yield up
    finally:
        if (state_dir / "cluster.json").exists():
            subprocess.run(
                [*RECUR, "cluster", "down", "--state-dir", str(state_dir), "--grace", "3"],
                env=env,
                capture_output=True,
                check=False,
            )
        redis_server.stop()
        # Dropping a database makes PostgreSQL checkpoint, seconds on a busy machine: nothing
        # waits for it.
        drop = admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
        threading.Thread(target=asyncio.run, args=(drop,), daemon=True).start()


class Api:
    """One tenant's HTTP client of the public API, through the topology's gateways in turn."""

    def __init__(self, http: aiohttp.ClientSession, gateways: list[str], secret: str):
        self.http = http
        self._gateways = itertools.cycle(gateways)
        self.headers = {"Authorization": f"Bearer {secret}"}

    async def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        gateway: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> tuple[int, CIMultiDict[str], Any]:
        """(status, headers, JSON body) of one request."""
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        url = (gateway or next(self._gateways)) + path
        async with self.http.request(
            method, url, json=body, headers=headers, params=params
        ) as response:
            text = await response.text()
            try:
                payload = json.loads(text)
            except ValueError:
                payload = text  # not JSON: kept as it came, for the failure message
            return response.status, response.headers.copy(), payload

    async def ok(
        self, method: str, path: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> Any:
        status, _, payload = await self.send(method, path, body, **kw)
        assert status == 200, (method, path, status, payload)
        return payload


async def _eventually(what: str, check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        await asyncio.sleep(0.2)


async def _active(api: Api, subscription: dict[str, Any]) -> dict[str, Any]:
    """The subscription once active: its first payment's event may reach it after the answer
    that created it (events travel through Redis Streams)."""
    path = f"/v1/subscriptions/{subscription['id']}"

    async def active() -> bool:
        subscription.update(await api.ok("GET", path))
        return bool(subscription["status"] == "active")

    await _eventually(f"{path} active", active, 15)
    return subscription


def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))


# --- 1. the whole flow ----------------------------------------------------------------------


async def test_the_whole_flow_through_a_gateway(cluster) -> None:
    # The services run no schedules of their own here: the renewal below can only be the
    # cluster's bill-run worker's, which runs `recur bill-run` every second.
    topology = cluster(RECUR_BILL_RUN_INTERVAL_SECONDS="1", RECUR_SCHEDULER_ENABLED="false")
    secret, _ = await topology.api_key("acme")
    async with _session() as http:
        api = Api(http, topology.gateways, secret)
        customer = await api.ok(
            "POST", "/v1/customers", {"email": "ada@example.com", "name": "Ada", "currency": "USD"}
        )
        method = await api.ok(
            "POST", f"/v1/customers/{customer['id']}/payment-methods", {"card": CARD}
        )
        assert method["card"]["last4"] == "4242"
        assert (await api.ok("GET", f"/v1/customers/{customer['id']}"))[
            "default_payment_method_id"
        ] == method["id"]
        product = await api.ok("POST", "/v1/products", {"name": "Recur Pro"})
        plan = await api.ok(
            "POST",
            "/v1/plans",
            {"product_id": product["id"], "currency": "USD", "amount": 1999, "interval": "month"},
        )
        subscription = await api.ok(
            "POST",
            "/v1/subscriptions",
            {"customer_id": customer["id"], "plan_id": plan["id"]},
            key="subscribe-ada",
        )
        subscription = await _active(api, subscription)
        first = await api.ok("GET", f"/v1/orders/{subscription['latest_order_id']}")
        assert (first["number"], first["status"], first["total"]) == (1, "paid", 1999)

        # Sent again through the other gateway, to other instances: the same subscription.
        status, headers, again = await api.send(
            "POST",
            "/v1/subscriptions",
            {"customer_id": customer["id"], "plan_id": plan["id"]},
            key="subscribe-ada",
        )
        assert (status, again["id"]) == (200, subscription["id"])
        assert headers.get("Idempotent-Replayed") == "true"

        # A month cannot pass in a test: the period is made to end now, the one change made
        # outside the API, and the bill-run worker finds the renewal due.
        db = Database(topology.database_url)
        try:
            async with UnitOfWork(db) as uow:
                await uow.execute(
                    sa.update(subscriptions)
                    .where(subscriptions.c.id == subscription["id"])
                    .values(current_period_end=sa.func.now(), next_action_at=sa.func.now())
                )
                await uow.commit()
        finally:
            await db.dispose()

        async def renewed() -> bool:
            page = await api.ok("GET", "/v1/orders", params={"subscription_id": subscription["id"]})
            return [o["status"] for o in page["data"]] == ["paid", "paid"]

        await _eventually("the renewal order paid", renewed, 60)

        async def reported() -> bool:
            return "renewed 1," in topology.log("bill-run")

        await _eventually("the bill run's report of it", reported, 30)
        orders = (
            await api.ok("GET", "/v1/orders", params={"subscription_id": subscription["id"]})
        )["data"]
        renewal = next(o for o in orders if o["id"] != first["id"])
        assert (renewal["number"], renewal["total"]) == (2, 1999)

        async def in_its_second_period() -> bool:
            now = await api.ok("GET", f"/v1/subscriptions/{subscription['id']}")
            return (now["status"], now["latest_order_id"]) == ("active", renewal["id"])

        await _eventually("the subscription active in its renewed period", in_its_second_period, 15)

        payments = (await api.ok("GET", "/v1/payments", params={"customer_id": customer["id"]}))[
            "data"
        ]
        assert sorted((p["order_id"], p["status"], p["amount"]) for p in payments) == sorted(
            [(first["id"], "succeeded", 1999), (renewal["id"], "succeeded", 1999)]
        )
        for payment in payments:
            fetched = await api.ok("GET", f"/v1/payments/{payment['id']}")
            assert fetched["payment_method_id"] == method["id"]

        # Billing history follows the payments through the events, in every instance.
        async def history_complete() -> bool:
            history = (await api.ok("GET", f"/v1/customers/{customer['id']}/billing-history"))[
                "data"
            ]
            entries = sorted((h["object"], h["id"], h["status"]) for h in history)
            return entries == sorted(
                [("order", first["id"], "paid"), ("order", renewal["id"], "paid")]
                + [("payment", p["id"], "succeeded") for p in payments]
            )

        await _eventually("billing history of both orders and payments", history_complete, 30)


# --- 2. instances killed under load ---------------------------------------------------------


# One kind of request of a steady load: (kind, n -> (method, path, body, idempotency key)).
Request = tuple[str, Callable[[int], tuple[str, str, Any, str | None]]]


def _get(kind: str, path: str) -> Request:
    return kind, lambda n: ("GET", path, None, None)


def _post(kind: str, path: str, body: Callable[[int], Any], tag: str) -> Request:
    """A POST whose n-th sending has its own Idempotency-Key."""
    return kind, lambda n: ("POST", path, body(n), f"{tag}-{n}")


@dataclass
class Load:
    """What a steady load sent and got: every failure (status >= 300 or no answer), and the
    answers of each request kind by time."""

    answered: list[tuple[float, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0  # seconds

    def since(self, moment: float, kind: str) -> int:
        return sum(1 for at, k in self.answered if at > moment and k == kind)


async def _steady_load(
    api: Api,
    requests: list[Request],
    stop: asyncio.Event,
    clients: int = 4,
) -> Load:
    """`clients` concurrent clients sending `requests` in turn, through the API's gateways in
    turn, until `stop` is set."""
    load = Load()
    counter = itertools.count()

    async def client() -> None:
        while not stop.is_set():
            n = next(counter)
            kind, make = requests[n % len(requests)]
            method, path, body, key = make(n)
            sent = time.monotonic()
            try:
                status, _, payload = await api.send(method, path, body, key=key)
            except (aiohttp.ClientError, TimeoutError) as error:
                load.failures.append(f"{method} {path}: {type(error).__name__} {error}")
                continue
            if status >= 300:
                load.failures.append(f"{method} {path}: {status} {payload}")
            else:
                load.answered.append((time.monotonic(), kind))
                load.slowest = max(load.slowest, time.monotonic() - sent)

    await asyncio.gather(*(client() for _ in range(clients)))
    return load


async def test_an_instance_of_each_service_killed_under_load(cluster) -> None:
    topology = cluster()
    secret, _ = await topology.api_key("acme")
    async with _session() as http:
        api = Api(http, topology.gateways, secret)
        customer = await api.ok("POST", "/v1/customers", {"name": "Ada", "currency": "USD"})
        await api.ok("POST", f"/v1/customers/{customer['id']}/payment-methods", {"card": CARD})
        product = await api.ok("POST", "/v1/products", {"name": "Pro"})
        plan = await api.ok(
            "POST",
            "/v1/plans",
            {"product_id": product["id"], "currency": "USD", "amount": 500, "interval": "month"},
        )
        subscription = await api.ok(
            "POST", "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
        )
        subscription = await _active(api, subscription)
        order_id = subscription["latest_order_id"]
        payment = (await api.ok("GET", "/v1/payments", params={"order_id": order_id}))["data"][0]

        # Reads of every service, and writes with an Idempotency-Key that cross services:
        # a one-off payment (payments -> customers), an order (orders -> customers,
        # subscriptions), a subscription (subscriptions -> customers, orders, payments).
        tag = time.monotonic_ns()
        widget = {"description": "Widget", "unit_amount": 900, "quantity": 1}
        requests = [
            _get("customers", f"/v1/customers/{customer['id']}"),
            _get("subscriptions", f"/v1/subscriptions/{subscription['id']}"),
            _get("orders", f"/v1/orders/{order_id}"),
            _get("payments", f"/v1/payments/{payment['id']}"),
            _post("customers", "/v1/customers", lambda n: {"name": f"c{n}"}, f"c{tag}"),
            _post(
                "payments",
                "/v1/payments",
                lambda n: {"customer_id": customer["id"], "amount": 100 + n, "currency": "USD"},
                f"p{tag}",
            ),
            _post(
                "orders",
                "/v1/orders",
                lambda n: {"customer_id": customer["id"], "lines": [widget]},
                f"o{tag}",
            ),
            _post(
                "subscriptions",
                "/v1/subscriptions",
                lambda n: {"customer_id": customer["id"], "plan_id": plan["id"]},
                f"s{tag}",
            ),
        ]
        stop = asyncio.Event()
        load_task = asyncio.create_task(_steady_load(api, requests, stop))
        killed_at = {}
        try:
            await asyncio.sleep(1.0)
            for service in ("customers", "subscriptions", "orders", "payments"):
                victim = topology.instances(service)[0]
                topology.kill(victim)
                killed_at[service] = time.monotonic()
                await asyncio.sleep(1.0)
            await asyncio.sleep(1.5)
        finally:
            stop.set()
            load = await load_task
    assert load.failures == [], (
        f"{len(load.failures)} failed: {load.failures[:5]}; the processes' warnings:\n"
        + "\n".join(topology.warnings())
    )
    # Every kind of request went on being answered once its service had lost an instance.
    for service, moment in killed_at.items():
        assert load.since(moment, service) >= 3, (service, load.since(moment, service))


# --- 3. Redis stopped and started again -----------------------------------------------------


async def test_redis_stopped_and_restarted_while_the_api_answers(cluster) -> None:
    topology = cluster()
    redis_server: RedisServer = cluster.redis
    gateways = topology.gateways
    keys = [await topology.api_key(f"tenant {n}") for n in range(len(gateways))]

    def buckets() -> set[str]:
        """The API keys whose rate-limit bucket is in Redis."""
        with redis_server.client() as client:
            found = {name.decode() for name in client.scan_iter("recur:rl:*")}
        return {key_id for _, key_id in keys if f"recur:rl:{key_id}" in found}

    async with _session() as http:
        # Each key through a gateway of its own: both gateways must find Redis again.
        apis = [
            Api(http, [gateway], secret)
            for gateway, (secret, _) in zip(gateways, keys, strict=True)
        ]
        customers = [
            await api.ok("POST", "/v1/customers", {"name": "Ada", "currency": "USD"})
            for api in apis
        ]
        assert buckets() == {key_id for _, key_id in keys}

        def requests(customer: dict[str, Any], tag: str) -> list[Request]:
            return [
                _get("read", f"/v1/customers/{customer['id']}"),
                _get("list", "/v1/customers"),
                _post("write", "/v1/customers", lambda n: {"name": f"c{n}"}, tag),
            ]

        async def load_while(action: Callable[[], None], tag: str) -> list[Load]:
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(_steady_load(api, requests(c, f"{tag}{i}"), stop, 2))
                for i, (api, c) in enumerate(zip(apis, customers, strict=True))
            ]
            try:
                await asyncio.sleep(0.5)
                await asyncio.to_thread(action)
                await asyncio.sleep(1.5)
            finally:
                stop.set()
                loads = await asyncio.gather(*tasks)
            return loads

        run = time.monotonic_ns()
        down = await load_while(redis_server.stop, f"down-{run}")
        assert not redis_server.answers()
        for load in down:
            assert load.failures == [], load.failures[:5]
            assert len(load.answered) >= 10
        # Without Redis the gateways still limit rates, each in its own process.
        status, headers, _ = await apis[0].send("GET", "/v1/customers")
        assert status == 200 and int(headers["RateLimit-Remaining"]) >= 0

        up = await load_while(redis_server.start, f"up-{run}")
        for load in up:
            assert load.failures == [], load.failures[:5]
        # The new server starts empty; the buckets come back as the gateways use it again.
        for api in apis:
            await api.ok("GET", "/v1/customers")
        await _eventually(
            "both gateways' buckets in the restarted Redis",
            lambda: _true_after(apis, lambda: buckets() == {key_id for _, key_id in keys}),
            10,
        )


async def _true_after(apis: list[Api], check: Callable[[], bool]) -> bool:
    """`check()` after one more request through each of `apis`."""
    for api in apis:
        await api.ok("GET", "/v1/customers")
    return check()


# --- 4. one rate limit for both gateways ----------------------------------------------------


async def test_one_rate_limit_shared_by_both_gateways(cluster) -> None:
    burst = 6
    # A token back every 20 s: none comes back while the test runs.
    topology = cluster(RECUR_RATE_LIMIT_PER_SECOND="0.05", RECUR_RATE_LIMIT_BURST=str(burst))
    secret, key_id = await topology.api_key("acme")
    other, _ = await topology.api_key("globex")
    async with _session() as http:
        api = Api(http, topology.gateways, secret)  # alternates between the two gateways
        answers = [await api.send("GET", "/v1/customers") for _ in range(2 * burst + 2)]
        statuses = [status for status, _, _ in answers]
        # One bucket: `burst` requests in all, not `burst` through each gateway.
        assert statuses == [200] * burst + [429] * (burst + 2)
        remaining = [int(headers["RateLimit-Remaining"]) for _, headers, _ in answers]
        assert remaining == [*range(burst - 1, -1, -1)] + [0] * (burst + 2)
        for status, headers, body in answers:
            assert headers["RateLimit-Limit"] == str(burst)
            if status == 429:
                assert int(headers["Retry-After"]) >= 1
                assert body["error"]["code"] == "rate_limited"
        # The bucket is the key's, in the shared Redis; another key has its own.
        with cluster.redis.client() as client:
            assert client.exists(f"recur:rl:{key_id}")
        assert (await Api(http, topology.gateways, other).send("GET", "/v1/customers"))[0] == 200
