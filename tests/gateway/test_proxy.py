"""The gateway process in front of the services' processes, all served by uvicorn on loopback:
routing, round robin, failover and retries, circuit breakers, keys, rate limits, request ids."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from typer.testing import CliRunner

from recur.cli import app as cli
from recur.gateway.middleware import API_KEY_ID_HEADER, TENANT_HEADER
from recur.gateway.proxy import RouteTable
from recur.gateway_app import create_gateway_app, gateway_upstreams, route_templates
from recur.kit.service_client import INTERNAL_TOKEN_HEADER
from recur.runtime import build_runtime
from recur.service_app import create_service_app
from recur.settings import SERVICE_NAMES, Settings

from ..conftest import Tenant
from ..contracts.conftest import INTERNAL_TOKEN, ServedApp, reserve


class Recorder:
    """A service's app, noting each public request it receives."""

    def __init__(self, app: Any):
        self.app = app
        self.seen: list[tuple[str, str, str]] = []  # method, path, X-Request-Id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith("/healthz"):
            headers = dict(scope["headers"])
            request_id = headers.get(b"x-request-id", b"").decode()
            self.seen.append((scope["method"], scope["path"], request_id))
        await self.app(scope, receive, send)

    def count(self, method: str) -> int:
        return sum(1 for seen in self.seen if seen[0] == method)


@dataclass
class Topology:
    """One instance of each service, a second of customers, and gateways in front."""

    settings: Settings
    served: dict[str, list[ServedApp]]
    recorders: list[Recorder]  # the two customers instances
    extra: list[ServedApp] = field(default_factory=list)

    @property
    def upstreams(self) -> dict[str, list[str]]:
        return {name: [s.url for s in servers] for name, servers in self.served.items()}

    async def serve(self, app: Any) -> ServedApp:
        [server] = reserve(1)
        server.app = app
        await server.start()
        self.extra.append(server)
        return server

    async def gateway(
        self, upstreams: dict[str, list[str]] | None = None, **overrides: Any
    ) -> ServedApp:
        settings = self.settings.model_copy(
            update={"gateway_health_interval_seconds": 60.0, **overrides}
        )
        app = create_gateway_app(build_runtime(settings), upstreams or self.upstreams)
        return await self.serve(app)


@pytest.fixture
async def topology(settings: Settings) -> AsyncIterator[Topology]:
    customers = reserve(2)
    served = {"customers": customers, **{n: reserve(1) for n in SERVICE_NAMES[1:]}}
    service_settings = settings.model_copy(
        update={
            "service_urls": {name: servers[0].url for name, servers in served.items()},
            "internal_token": INTERNAL_TOKEN,
        }
    )
    recorders = []
    topology = Topology(service_settings, served, recorders)
    try:
        for name, servers in served.items():
            for server in servers:
                app = create_service_app(
                    build_runtime(service_settings, local_services={name}), name
                )
                if name == "customers":
                    app = Recorder(app)
                    recorders.append(app)
                server.app = app
                await server.start()
        yield topology
    finally:
        every = [s for servers in served.values() for s in servers] + topology.extra
        await asyncio.gather(*(server.stop() for server in every))


def _client(url: str, tenant: Tenant) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {tenant.key}"})


async def _metric(url: str, name: str, labels: str) -> float:
    """A sample's value in the gateway's /metrics; `labels` as exposed (sorted by name)."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    found = re.search(rf"^{re.escape(name)}\{{{re.escape(labels)}\}} (\S+)$", text, re.M)
    assert found, f"{name}{{{labels}}} not in /metrics"
    return float(found.group(1))


async def test_requests_are_answered_as_the_services_answer_them(topology, tenant) -> None:
    gateway = await topology.gateway()
    direct = topology.upstreams["customers"][0]
    async with _client(gateway.url, tenant) as api, _client(direct, tenant) as straight:
        created = await api.post("/v1/customers", json={"name": "Ada", "currency": "USD"})
        assert created.status_code == 200, created.text
        customer_id = created.json()["id"]
        for path in (f"/v1/customers/{customer_id}", "/v1/customers?limit=5", "/v1/customers/x"):
            through, straight_answer = await api.get(path), await straight.get(path)
            assert through.status_code == straight_answer.status_code
            assert through.json() == straight_answer.json()
            assert through.headers["content-type"] == straight_answer.headers["content-type"]
        # Under /v1/customers, yet the payments service's: found from its routes.
        card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        attached = await api.post(
            f"/v1/customers/{customer_id}/payment-methods", json={"card": card}
        )
        assert attached.status_code == 200, attached.text
        assert attached.json()["id"].startswith("pm_")
        number = created.json()["number"]
        paid = await api.post(f"/payment?customer_id={number}&amount=12.50")
        assert paid.status_code == 200, paid.text
        status = await api.get(f"/payment-status?customer_id={number}")
        assert status.status_code == 200, status.text
        assert (await api.get("/v1/plans")).json()["data"] == []

        unknown = await api.get("/v1/nothing-here")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "not_found"
        docs = (await api.get("/openapi.json")).json()
        assert {"/v1/customers", "/v1/orders", "/payment"} <= set(docs["paths"])

        # Only the gateway may vouch for a tenant: a forged header without the token is not.
        forged = await straight.get(
            "/v1/customers",
            headers={
                "Authorization": "",
                TENANT_HEADER: tenant.id,
                API_KEY_ID_HEADER: "key_1",
                INTERNAL_TOKEN_HEADER: "not-the-internal-token",
            },
        )
        assert forged.status_code == 401


async def test_keys_rate_limits_and_request_ids_at_the_gateway(topology, tenant) -> None:
    gateway = await topology.gateway(rate_limit_burst=3, rate_limit_per_second=0.01)
    async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
        refused = await anonymous.get("/v1/customers")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert (await anonymous.get("/healthz")).json() == {"status": "ok"}
        assert (await anonymous.get("/readyz")).status_code == 200
    assert not any(r.seen for r in topology.recorders)

    async with _client(gateway.url, tenant) as api:
        traced = await api.get("/v1/customers", headers={"X-Request-Id": "trace-gw-1"})
        assert traced.status_code == 200
        assert traced.headers.get_list("x-request-id") == ["trace-gw-1"]
        assert traced.headers["ratelimit-limit"] == "3"
        assert traced.headers["ratelimit-remaining"] == "2"
        made = await api.get("/v1/customers")
        made_id = made.headers["x-request-id"]
        assert made_id.startswith("req_")
        # The service got the same ids.
        seen_ids = [request_id for r in topology.recorders for _, _, request_id in r.seen]
        assert sorted(seen_ids) == sorted(["trace-gw-1", made_id])

        await api.get("/v1/customers")
        limited = await api.get("/v1/customers")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-remaining"] == "0"
    # The services spent no token of their own: only the gateway's bucket counts.
    assert sum(len(r.seen) for r in topology.recorders) == 3


async def test_round_robin_over_the_instances(topology, tenant) -> None:
    gateway = await topology.gateway()
    first, second = topology.recorders
    async with _client(gateway.url, tenant) as api:
        for _ in range(6):
            assert (await api.get("/v1/customers")).status_code == 200
    assert len(first.seen) == len(second.seen) == 3
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{gateway.url}/metrics")).text
    assert 'recur_http_requests_total{method="GET",route="/v1/customers",status="200"} 6.0' in text


async def test_stopping_an_instance_loses_no_idempotent_request(topology, tenant) -> None:
    gateway = await topology.gateway()
    doomed = topology.served["customers"][1]
    first, second = topology.recorders
    async with _client(gateway.url, tenant) as api:
        created = await api.post("/v1/customers", json={"name": "Ada"})
        customer_id = created.json()["id"]
        answers = []
        for i in range(30):
            if i == 12:
                await doomed.stop()
            if i % 2:
                response = await api.post(
                    "/v1/customers", json={"name": f"n{i}"}, headers={"Idempotency-Key": f"k{i}"}
                )
            else:
                response = await api.get(f"/v1/customers/{customer_id}")
            answers.append(response.status_code)
        assert answers == [200] * 30
        stopped_after = len(second.seen)
        assert stopped_after >= 6  # it had its turns before it stopped
        listed = (await api.get("/v1/customers", params={"limit": 100})).json()["data"]
        # Every POST made exactly one customer, the retried ones included.
        assert sorted(c["name"] for c in listed) == sorted(
            ["Ada", *(f"n{i}" for i in range(1, 30, 2))]
        )
        assert len(first.seen) + stopped_after == 32

        # With no instance left, the gateway says so.
        await topology.served["customers"][0].stop()
        gone = await api.get(f"/v1/customers/{customer_id}")
        assert gone.status_code == 503
        assert gone.json()["error"]["type"] == "api_error"
        assert gone.json()["error"]["code"] == "service_unavailable"
        assert gone.headers["retry-after"] == "1"
        # The other services are still served.
        assert (await api.get("/v1/plans")).status_code == 200


async def test_a_post_without_a_key_is_never_retried(topology, tenant) -> None:
    gateway = await topology.gateway()
    first, _second = topology.recorders
    await topology.served["customers"][1].stop()
    async with _client(gateway.url, tenant) as api:
        answers = [
            (await api.post("/v1/customers", json={"name": f"n{i}"})).status_code for i in range(2)
        ]
        assert sorted(answers) == [200, 503]
        # The one that met the stopped instance did not go to the other one.
        assert first.count("POST") == 1
        # The stopped instance is out of the rotation now.
        for i in range(3):
            assert (await api.post("/v1/customers", json={"name": f"m{i}"})).status_code == 200
        assert first.count("POST") == 4
    stopped = f'upstream="customers={topology.upstreams["customers"][1]}"'
    unreachable = await _metric(
        gateway.url, "recur_upstream_requests_total", f'outcome="unreachable",{stopped}'
    )
    assert unreachable == 1


class BreaksOff:
    """An instance that dies in the middle of every answer: the head is sent, the body is cut
    short and the connection dropped."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"id": "cus_', "more_body": True})
        raise ConnectionAbortedError("the instance died mid-answer")


async def test_an_answer_broken_off_is_retried_like_no_answer(topology, tenant) -> None:
    breaks = BreaksOff()
    broken = await topology.serve(breaks)
    good = topology.upstreams["customers"][0]
    gateway = await topology.gateway({**topology.upstreams, "customers": [broken.url, good]})
    async with _client(gateway.url, tenant) as api:
        # A GET, and a POST with an Idempotency-Key, go on to the other instance.
        assert (await api.get("/v1/customers")).status_code == 200
        created = await api.post(
            "/v1/customers", json={"name": "Ada"}, headers={"Idempotency-Key": "broken-1"}
        )
        assert created.status_code == 200, created.text
        assert breaks.requests >= 1
    listed = await _names_of_customers(gateway.url, tenant)
    assert listed == ["Ada"]


async def _names_of_customers(url: str, tenant: Tenant) -> list[str]:
    async with _client(url, tenant) as api:
        return [c["name"] for c in (await api.get("/v1/customers")).json()["data"]]


async def test_breaker_opens_after_failures_and_half_opens_after_cool_down(
    topology, tenant, tmp_path: Path
) -> None:
    # A customers instance that is alive but fails every request: its database is missing.
    broken_settings = topology.settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path}/missing/recur.db"}
    )
    broken_app = create_service_app(
        build_runtime(broken_settings, local_services={"customers"}), "customers"
    )
    broken = await topology.serve(broken_app)
    good = topology.upstreams["customers"][0]
    upstreams = {**topology.upstreams, "customers": [good, broken.url]}
    gateway = await topology.gateway(
        upstreams, gateway_breaker_failures=2, gateway_breaker_cooldown_seconds=0.5
    )
    label = f'upstream="customers={broken.url}"'

    async def breaker() -> float:
        return await _metric(gateway.url, "recur_circuit_breaker_state", label)

    async with _client(gateway.url, tenant) as api:
        assert await breaker() == 0  # closed
        statuses = [(await api.get("/v1/customers")).status_code for _ in range(4)]
        assert sorted(statuses) == [200, 200, 500, 500]  # a 5xx is the service's answer
        assert await breaker() == 2  # open
        for _ in range(4):
            assert (await api.get("/v1/customers")).status_code == 200
        await asyncio.sleep(0.6)
        assert await breaker() == 1  # half-open: one trial request
        statuses = [(await api.get("/v1/customers")).status_code for _ in range(3)]
        assert sorted(statuses) == [200, 200, 500]
        assert await breaker() == 2  # the trial failed: open again


def test_route_table_comes_from_the_services_routes() -> None:
    table = RouteTable(route_templates())
    owner = {
        "/v1/customers": "customers",
        "/v1/customers/cus_1": "customers",
        "/v1/customers/cus_1/billing-history": "customers",
        "/v1/customers/cus_1/payment-methods": "payments",
        "/v1/customers/cus_1/payment-methods/pm_1": "payments",
        "/v1/plans/plan_1": "subscriptions",
        "/v1/test-clocks/clock_1/advance": "subscriptions",
        "/v1/orders/ord_1/invoice": "orders",
        "/payment": "payments",
        "/payment-status": "payments",
    }
    for path, service in owner.items():
        route = table.match(path)
        assert route is not None and route.service == service, path
    assert table.match("/v1/customers/cus_1/nothing") is None
    assert table.match("/v1") is None
    with pytest.raises(ValueError, match="both"):
        RouteTable({"customers": ["/v1/x"], "orders": ["/v1/x"]})


def test_upstreams_from_options_and_settings() -> None:
    settings = Settings(
        service_urls="customers=http://c:1,subscriptions=http://s:1,orders=http://o:1",
        gateway_upstreams="payments=http://p:1,http://p:2/,orders=http://o:2",
    )
    assert gateway_upstreams(settings, ["customers=http://c:2,http://c:3"]) == {
        "customers": ["http://c:2", "http://c:3"],
        "subscriptions": ["http://s:1"],
        "orders": ["http://o:2"],
        "payments": ["http://p:1", "http://p:2"],
    }
    with pytest.raises(ValueError, match="no instance of subscriptions, orders, payments"):
        gateway_upstreams(Settings(service_urls="customers=http://c:1"), [])
    for bad in ("http://c:1", "shipping=http://x:1", "customers=c:1"):
        with pytest.raises(ValueError):
            gateway_upstreams(settings, [bad])

    result = CliRunner().invoke(cli, ["gateway", "--upstream", "customers=http://c:1"])
    assert result.exit_code == 2
    assert "no instance of" in result.output
