"""The client contract suite: every test here runs against every service client through both
adapters, in-process (`local`) and over HTTP (`http`) to the four services, each served as its
own app by uvicorn on a loopback port, on each configured database.

Test data is made through the embedded app's public API (`api`); the clients under test are
`clients.customers`, `clients.subscriptions`, `clients.orders` and `clients.payments`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import httpx
import pytest
import uvicorn

from recur.kit.errors import RecurError
from recur.runtime import Runtime, build_runtime
from recur.service_app import create_service_app
from recur.settings import SERVICE_NAMES, Settings

INTERNAL_TOKEN = "contract-suite-internal-token"


class ServedApp:
    """An ASGI app served by uvicorn on a loopback port of this test process."""

    def __init__(self, app: Any):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.app = app
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="on", ws="none", http="h11"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # the server failed to start: raise its error
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self.sock.close()


def reserve(count: int) -> list[ServedApp]:
    """Loopback sockets for `count` apps, bound before the apps exist so each service can be
    told where the others are."""
    return [ServedApp(None) for _ in range(count)]


@pytest.fixture(params=["local", "http"])
def adapter(request: pytest.FixtureRequest) -> str:
    """Which client adapter a contract test runs through."""
    return str(request.param)


@pytest.fixture
async def service_urls(adapter: str, settings: Settings) -> AsyncIterator[dict[str, str]]:
    """For the http adapter, the four services, each its own app with its own runtime, calling
    the others over HTTP; their URLs by name. Nothing for the local adapter."""
    if adapter == "local":
        yield {}
        return
    served = dict(zip(SERVICE_NAMES, reserve(len(SERVICE_NAMES)), strict=True))
    urls = {name: s.url for name, s in served.items()}
    service_settings = settings.model_copy(
        update={"service_urls": urls, "internal_token": INTERNAL_TOKEN}
    )
    try:
        for name, server in served.items():
            rt = build_runtime(service_settings, local_services={name})
            server.app = create_service_app(rt, name)
            await server.start()
        yield urls
    finally:
        await asyncio.gather(*(server.stop() for server in served.values()))


@pytest.fixture
async def clients(
    service_urls: dict[str, str], runtime: Runtime, settings: Settings
) -> AsyncIterator[Runtime]:
    """A runtime whose four clients are the adapter under test: the embedded runtime's own
    (local), or HTTP clients of the four service processes (http)."""
    if not service_urls:
        yield runtime
        return
    caller = build_runtime(
        settings.model_copy(update={"service_urls": service_urls, "internal_token": INTERNAL_TOKEN})
    )
    try:
        yield caller
    finally:
        await caller.close()


async def same_error(
    expected: Awaitable[Any], actual: Awaitable[Any], code: str | None = None
) -> RecurError:
    """Both calls fail with the same domain error: type, code, param and message. `expected`
    is the in-process call, `actual` the adapter under test."""
    try:
        with pytest.raises(RecurError) as local:
            await expected
        with pytest.raises(RecurError) as other:
            await actual
    finally:
        # Never leave the second call un-awaited when the first did not fail.
        for call in (expected, actual):
            if isinstance(call, Coroutine):
                call.close()
    got, want = other.value, local.value
    assert type(got) is type(want)
    assert (got.code, got.param, got.message) == (want.code, want.param, want.message)
    if code is not None:
        assert got.code == code
    return got


MakeCustomer = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_customer(api: httpx.AsyncClient) -> MakeCustomer:
    """A customer made through the public API (in USD unless told otherwise)."""

    async def make(client: httpx.AsyncClient | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("currency", "USD")
        response = await (client or api).post("/v1/customers", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    return make


@pytest.fixture
def attach_card(api: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    """Attach a card to a customer (a declined one with 4000000000000002)."""

    async def attach(customer_id: str, number: str = "4242424242424242") -> dict[str, Any]:
        card = {"number": number, "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        response = await api.post(
            f"/v1/customers/{customer_id}/payment-methods", json={"card": card}
        )
        assert response.status_code == 200, response.text
        return response.json()

    return attach


@pytest.fixture
def make_order(api: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    """An open (finalized) order of one line."""

    async def make(customer_id: str, unit_amount: int = 1000) -> dict[str, Any]:
        response = await api.post(
            "/v1/orders",
            json={
                "customer_id": customer_id,
                "lines": [{"description": "Widget", "unit_amount": unit_amount, "quantity": 1}],
            },
        )
        assert response.status_code == 200, response.text
        return response.json()

    return make
