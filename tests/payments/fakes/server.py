"""What the fake gateways share: serving on loopback, and faults they can be told to inject.

A fault applies to the next request(s) the fake receives, whatever they are:

- `fail_next(status)`: answer `status` at once, without doing anything (a 503, a 429...);
- `stall_next(processed=True)`: do the request (a charge is made and kept under its idempotency
  key), then hold the answer back until the client has given up: a timeout after the request
  was received. With `processed=False`, the request is held back and never done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Fault:
    status: int | None = None  # answer this at once
    body: Any = None
    stall: bool = False  # hold the answer back
    processed: bool = True  # when stalling: do the request first
    headers: dict[str, str] | None = None


class FaultInjector:
    """Faults queued for the next requests, and the middleware applying them."""

    def __init__(self) -> None:
        self._queue: list[Fault] = []
        self._released = asyncio.Event()
        self._held = asyncio.Condition()
        self.stalled = 0  # requests held back so far (done first, when they were to be)

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        count: int = 1,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._queue.extend(Fault(status=status, body=body, headers=headers) for _ in range(count))

    def stall_next(self, *, processed: bool, count: int = 1) -> None:
        self._queue.extend(Fault(stall=True, processed=processed) for _ in range(count))

    async def wait_stalled(self, count: int = 1) -> None:
        """Until `count` requests are held back: a client can time out before the fake has
        even read its request, on a loaded machine."""
        async with self._held:
            await asyncio.wait_for(self._held.wait_for(lambda: self.stalled >= count), 10)

    def release(self) -> None:
        """Let every held-back answer go (the fake is shutting down)."""
        self._released.set()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        fault = self._queue.pop(0) if self._queue else None
        if fault is None:
            return await handler(request)
        if fault.status is not None:
            return web.json_response(fault.body or {}, status=fault.status, headers=fault.headers)
        response = await handler(request) if fault.processed else None
        async with self._held:
            self.stalled += 1
            self._held.notify_all()
        # Held until the fake shuts down: the client gives up long before.
        await self._released.wait()
        return response or web.json_response({}, status=503)


@contextlib.asynccontextmanager
async def serve(app: web.Application, faults: FaultInjector) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        faults.release()
        await runner.cleanup()


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum (ISO/IEC 7812), as a gateway checks it."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


# The test cards both fakes honour, as their real gateways document theirs.
DECLINED_AT_VERIFY = {
    "4000000000000002": "generic",
    "4000000000009995": "insufficient_funds",
    "4000000000000119": "processing_error",
}
DECLINED_AT_CHARGE = {"4000000000000341"}


def brand_of(digits: str) -> str:
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in {"51", "52", "53", "54", "55"} or "2221" <= digits[:4] <= "2720":
        return "mastercard"
    if digits[:2] in {"34", "37"}:
        return "amex"
    return "unknown"
