"""A service client over several instances: round robin; a call that could not connect goes to
the next instance, and the instance is passed over for a while; a call sent without an answer
goes to another instance only when it is idempotent, and so does one whose response broke off."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from pydantic import TypeAdapter

from recur.kit.errors import ServiceUnavailable
from recur.kit.service_client import PASS_OVER_SECONDS, ServiceClient, ServiceSession
from recur.settings import Settings

ANY = TypeAdapter(dict[str, Any])


class Instance:
    """A loopback HTTP server that answers each request as `behaviour` says, and counts them."""

    def __init__(self, name: str, behaviour: str = "answer"):
        self.name = name
        self.behaviour = behaviour  # answer | hang-up (no response) | break (half a response)
        self.requests: list[str] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                length = next(
                    int(line.split(":")[1])
                    for line in lines
                    if line.lower().startswith("content-length")
                )
                await reader.readexactly(length)
                self.requests.append(lines[0].split()[1])
                if self.behaviour == "hang-up":
                    break
                body = orjson.dumps({"instance": self.name})
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                )
                if self.behaviour == "break":
                    writer.write(head.encode() + body[:3])
                    await writer.drain()
                    break
                writer.write(head.encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _nobody() -> str:
    """A loopback URL nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def instances() -> AsyncIterator[Callable[..., Awaitable[Instance]]]:
    started: list[Instance] = []

    async def start(name: str, behaviour: str = "answer") -> Instance:
        instance = Instance(name, behaviour)
        await instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        await instance.stop()


@pytest.fixture
async def session() -> AsyncIterator[ServiceSession]:
    session = ServiceSession(timeout_seconds=2)
    yield session
    await session.close()


class FakeTime:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


async def _names(client: ServiceClient, method: str, count: int) -> list[str]:
    return [(await client.call(method, {}, ANY))["instance"] for _ in range(count)]


async def test_calls_go_round_robin(instances, session) -> None:
    a, b, c = await instances("a"), await instances("b"), await instances("c")
    client = ServiceClient("svc", [a.url, b.url, c.url], session, "t" * 16)
    assert await _names(client, "get", 6) == ["a", "b", "c", "a", "b", "c"]
    assert a.requests == ["/internal/svc/get"] * 2


async def test_a_refused_connection_moves_on_and_passes_the_instance_over(
    instances, session
) -> None:
    b = await instances("b")
    time = FakeTime()
    down = _nobody()
    # `charge` is not idempotent: a connection never made is safe to make elsewhere all the same.
    client = ServiceClient("svc", [down, b.url], session, None, now=time)
    assert await _names(client, "charge", 4) == ["b"] * 4
    assert len(b.requests) == 4
    # Back up, but passed over (tried last) until its time is up; then in its turn again.
    back = Instance("a")
    await back.start(port=int(down.rpartition(":")[2]))
    try:
        assert await _names(client, "charge", 2) == ["b", "b"]
        time.now += PASS_OVER_SECONDS
        assert sorted(await _names(client, "charge", 2)) == ["a", "b"]
    finally:
        await back.stop()


async def test_no_answer_moves_on_only_for_idempotent_calls(instances, session) -> None:
    hangs_up, b = await instances("a", "hang-up"), await instances("b")
    client = ServiceClient("svc", [hangs_up.url, b.url], session, None, idempotent_calls={"get"})
    assert await client.call("get", {}, ANY) == {"instance": "b"}
    assert (len(hangs_up.requests), len(b.requests)) == (1, 1)

    client = ServiceClient("svc", [hangs_up.url, b.url], session, None, idempotent_calls={"get"})
    with pytest.raises(ServiceUnavailable, match="did not answer charge"):
        await client.call("charge", {}, ANY)
    # It may have been carried out by the instance that hung up: never sent again.
    assert (len(hangs_up.requests), len(b.requests)) == (2, 1)


async def test_a_response_broken_off_is_no_answer(instances, session) -> None:
    breaks, b = await instances("a", "break"), await instances("b")
    # The instance died between the response's head and its body: an idempotent call is
    # sent again elsewhere, as it would be after no answer at all...
    client = ServiceClient("svc", [breaks.url, b.url], session, None, idempotent_calls={"get"})
    assert await client.call("get", {}, ANY) == {"instance": "b"}
    assert (len(breaks.requests), len(b.requests)) == (1, 1)

    # ... and any other call, which may have been carried out, is not.
    client = ServiceClient("svc", [breaks.url, b.url], session, None, idempotent_calls={"get"})
    with pytest.raises(ServiceUnavailable, match="did not answer charge in full"):
        await client.call("charge", {}, ANY)
    assert (len(breaks.requests), len(b.requests)) == (2, 1)


async def test_every_instance_down_is_service_unavailable(session) -> None:
    first, second = _nobody(), _nobody()
    client = ServiceClient("svc", [first, second], session, None, idempotent_calls={"get"})
    with pytest.raises(ServiceUnavailable) as unavailable:
        await client.call("get", {}, ANY)
    assert first in str(unavailable.value) and second in str(unavailable.value)


def test_service_urls_name_several_instances_per_service() -> None:
    settings = Settings(
        service_urls="customers=http://a:1,http://b:1/,orders=http://c:1,payments=https://d:1"
    )
    assert settings.service_urls == {
        "customers": ["http://a:1", "http://b:1"],
        "orders": ["http://c:1"],
        "payments": ["https://d:1"],
    }
    # One URL per service, as before, and the same given as a mapping.
    assert Settings(service_urls="customers=http://a:1").service_urls == {
        "customers": ["http://a:1"]
    }
    assert Settings(service_urls={"orders": "http://c:1"}).service_urls == {
        "orders": ["http://c:1"]
    }
    for bad in ("http://a:1", "shipping=http://x:1", "customers=a:1", "customers="):
        with pytest.raises(ValueError):
            Settings(service_urls=bad)
