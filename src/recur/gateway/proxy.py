"""The gateway process's forwarding: each public request to an instance of the service that
owns its path.

- Routing: the owning service is found from the services' own route templates (one anchored
  regular expression over all of them), so a route added to a service is routed without
  touching the gateway; a path no service has is a 404 here.
- Balancing: round robin over the service's instances that are healthy and whose circuit
  breaker lets a request through.
- Health: every instance's `/healthz` is polled (active checks); an instance that cannot be
  reached is ejected at once (passive) and comes back when its health check passes again.
- Circuit breaker per instance: closed; open after `breaker_failures` failures in a row
  (connection errors, timeouts, 5xx); after the cool-down, half-open: one trial request, which
  closes it again or reopens it.
- Retries: a GET (or HEAD, OPTIONS), or a POST with an `Idempotency-Key`, that fails on one
  instance before any response (refused, reset, timed out) goes to another instance, at most
  once to each. The services keep idempotency keys in their shared database, so a retried POST
  whose first attempt did reach a service is replayed (or a 409 while it still runs), never
  applied twice. Anything else is never retried: the first attempt may have been applied.

The requests arrive authenticated (the gateway's middleware resolved the tenant and spent a
token of the key's bucket); the tenant and key id go to the service with the internal token,
so the service neither resolves the key again nor spends a second token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import Message, Receive, Scope, Send
from yarl import URL

from recur.gateway.middleware import API_KEY_ID_HEADER, TENANT_HEADER
from recur.kit.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from recur.kit.http import error_body
from recur.kit.request_id import current_request_id
from recur.kit.service_client import INTERNAL_TOKEN_HEADER

log = logging.getLogger("recur.gateway.proxy")

# The values of recur_circuit_breaker_state, as kit.observability reserves them.
BREAKER_GAUGE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Neither forwarded nor returned: they describe one hop, or the gateway sets its own.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_NOT_RETURNED = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"date", b"server"}
    | {b"x-request-id"}  # the gateway's RequestIdMiddleware adds the same id once
)
# Read whole and sent in one piece below this size; streamed above it (invoices, big lists).
_WHOLE_BODY_BYTES = 256 * 1024


@dataclass(frozen=True)
class UpstreamRoute:
    """The route template a path matched and the service that owns it. Left in the ASGI scope
    as `route`, where the request metrics read the template from."""

    path: str
    service: str


class RouteTable:
    """Path -> the service owning it, from each service's route templates."""

    def __init__(self, templates: Mapping[str, Iterable[str]]):
        owner: dict[str, str] = {}
        for service, paths in templates.items():
            for path in paths:
                if owner.setdefault(path, service) != service:
                    raise ValueError(f"{path} is routed by both {owner[path]} and {service}")
        # More literal segments first: `/v1/things/search` before `/v1/things/{id}`.
        self._routes = sorted(
            (UpstreamRoute(path, service) for path, service in owner.items()),
            key=lambda route: -sum(1 for s in route.path.split("/") if not s.startswith("{")),
        )
        alternatives = (
            f"(?P<r{i}>{_PARAMETER.sub('[^/]+', re.escape(route.path))})"
            for i, route in enumerate(self._routes)
        )
        self._pattern = re.compile("^(?:" + "|".join(alternatives) + ")$")

    def match(self, path: str) -> UpstreamRoute | None:
        found = self._pattern.match(path)
        if found is None or found.lastgroup is None:
            return None
        return self._routes[int(found.lastgroup[1:])]


# `{customer_id}` once re.escape has made it `\{customer_id\}`.
_PARAMETER = re.compile(r"\\\{[^}]*\\\}")


@dataclass
class Instance:
    """One process of a service."""

    service: str
    url: str
    breaker: Breaker
    healthy: bool = True

    @property
    def label(self) -> str:
        return f"{self.service}={self.url}"


@dataclass
class Pool:
    """A service's instances, taken in turn."""

    instances: list[Instance]
    _next: int = field(default=0)

    def choose(self, tried: Iterable[Instance], now: float) -> Instance | None:
        """The next instance in turn that is healthy, not tried yet and admitted by its
        breaker; None when there is none."""
        count = len(self.instances)
        start, self._next = self._next, (self._next + 1) % count
        for step in range(count):
            instance = self.instances[(start + step) % count]
            if instance.healthy and instance not in tried and instance.breaker.admits(now):
                return instance
        return None


@dataclass(frozen=True)
class ProxyConfig:
    internal_token: str | None
    timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 2.0
    health_interval_seconds: float = 2.0
    breaker_failures: int = 5
    breaker_cooldown_seconds: float = 10.0


class _Unreachable(Exception):
    """An attempt failed before any response: nothing came back from the instance."""


class Proxy:
    """The ASGI app forwarding public requests to the services' instances."""

    def __init__(
        self,
        routes: RouteTable,
        upstreams: Mapping[str, list[str]],
        config: ProxyConfig,
        registry: CollectorRegistry,
        now: Callable[[], float] = time.monotonic,
    ):
        self.routes = routes
        self.config = config
        self._now = now
        self.pools = {
            service: Pool(
                [
                    Instance(
                        service,
                        url.rstrip("/"),
                        Breaker(config.breaker_failures, config.breaker_cooldown_seconds),
                    )
                    for url in urls
                ]
            )
            for service, urls in upstreams.items()
            if urls
        }
        self._session: aiohttp.ClientSession | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._upstream_requests = Counter(
            "recur_upstream_requests",
            "Requests the gateway sent to a service instance, by outcome.",
            ("upstream", "outcome"),
            registry=registry,
        )
        self._counted: dict[tuple[str, str], Counter] = {}
        self._breaker_state = Gauge(
            "recur_circuit_breaker_state",
            "Circuit breaker per upstream instance: 0 closed, 1 half-open, 2 open.",
            ("upstream",),
            registry=registry,
        )
        self.refresh_breaker_gauge()

    def instances(self) -> list[Instance]:
        return [instance for pool in self.pools.values() for instance in pool.instances]

    def _count(self, instance: Instance, outcome: str) -> None:
        # The labelled child is looked up once per instance and outcome, not per request.
        child = self._counted.get((instance.url, outcome))
        if child is None:
            child = self._upstream_requests.labels(instance.label, outcome)
            self._counted[(instance.url, outcome)] = child
        child.inc()

    def refresh_breaker_gauge(self) -> None:
        now = self._now()
        for instance in self.instances():
            state = instance.breaker.state(now)
            self._breaker_state.labels(instance.label).set(BREAKER_GAUGE[state])

    async def start(self) -> None:
        """Open the shared session (keep-alive connections) and start the health checks."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.config.connect_timeout_seconds,
                sock_read=self.config.timeout_seconds,
            ),
            # Idle connections are dropped before uvicorn's 5 s keep-alive drops them from the
            # other side: a request sent on a connection the server is closing would fail.
            connector=aiohttp.TCPConnector(limit=1024, limit_per_host=256, keepalive_timeout=4),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        self._health_task = asyncio.create_task(self._check_health_forever())

    async def stop(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        if self._session is not None:
            await self._session.close()

    async def check_health(self) -> None:
        """One round of active health checks: every instance's `/healthz`, at once."""
        await asyncio.gather(*(self._check(instance) for instance in self.instances()))

    async def _check(self, instance: Instance) -> None:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=min(self.config.health_interval_seconds, 2.0))
        try:
            async with self._session.get(f"{instance.url}/healthz", timeout=timeout) as resp:
                healthy = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            healthy = False
        if healthy != instance.healthy:
            log.warning("%s is %s", instance.label, "healthy" if healthy else "unhealthy")
        instance.healthy = healthy

    async def _check_health_forever(self) -> None:
        while True:
            try:
                await self.check_health()
            except Exception:  # the checks must outlive one bad round; the error is logged
                log.exception("health checks failed")
            await asyncio.sleep(self.config.health_interval_seconds)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        route = self.routes.match(scope["path"])
        if route is None or route.service not in self.pools:
            message = f"no route {scope['path']}"
            await _send_error(send, 404, "invalid_request_error", "not_found", message)
            return
        scope["route"] = route
        body = await _read_body(receive)
        headers = self._forwarded_headers(scope)
        method = scope["method"]
        retriable = method in SAFE_METHODS or (
            method == "POST" and any(name == "idempotency-key" for name, _ in headers)
        )
        url_path = scope.get("raw_path") or scope["path"].encode()
        target = url_path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        pool = self.pools[route.service]
        tried: list[Instance] = []
        while (instance := pool.choose(tried, self._now())) is not None:
            tried.append(instance)
            try:
                response, payload = await self._attempt(instance, method, target, headers, body)
            except _Unreachable:
                if retriable:
                    continue
                await _send_error(
                    send,
                    503,
                    "api_error",
                    "service_unavailable",
                    f"the {route.service} service did not answer; the request may not have "
                    "been applied: send it again with an Idempotency-Key to retry it safely",
                )
                return
            await self._relay(instance, response, payload, send)
            return
        await _send_error(
            send,
            503,
            "api_error",
            "service_unavailable",
            f"no instance of the {route.service} service is available",
        )

    def _forwarded_headers(self, scope: Scope) -> list[tuple[str, str]]:
        """The request's headers for the instance: a list of pairs, which aiohttp copies into
        its own headers as they are (a CIMultiDict built here would be copied once more)."""
        client = scope.get("client")
        headers = []
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1")
            if (
                name in _HOP_BY_HOP
                or name.startswith("x-recur-")
                or name == "x-request-id"
                or (client and name == "x-forwarded-for")  # replaced below
            ):
                continue
            headers.append((name, raw_value.decode("latin-1")))
        request_id = current_request_id()
        if request_id is not None:
            headers.append(("X-Request-Id", request_id))
        state = scope.get("state", {})
        if self.config.internal_token and state.get("tenant_id"):
            headers.append((INTERNAL_TOKEN_HEADER, self.config.internal_token))
            headers.append((TENANT_HEADER, state["tenant_id"]))
            headers.append((API_KEY_ID_HEADER, state["api_key_id"]))
        if client:
            headers.append(("X-Forwarded-For", client[0]))
        return headers

    async def _attempt(
        self,
        instance: Instance,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> tuple[aiohttp.ClientResponse, bytes | None]:
        """Send the request to `instance`; the response once its head has arrived, with its
        whole body when it is small. A body that breaks off counts as no answer, like a
        connection lost before the head: the request may be sent again elsewhere."""
        assert self._session is not None
        response = None
        try:
            response = await self._session.request(
                method,
                URL(instance.url + target, encoded=True),
                headers=headers,
                data=body or None,
                allow_redirects=False,
            )
            length = response.content_length
            payload = (
                await response.read()
                if length is not None and length <= _WHOLE_BODY_BYTES
                else None
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            if response is not None:
                response.release()
            # Out of the rotation at once; its health check lets it back in.
            instance.healthy = False
            instance.breaker.failed(self._now())
            self._count(instance, "unreachable")
            log.warning("%s unreachable: %s %s", instance.label, type(error).__name__, error)
            raise _Unreachable from error
        if response.status >= 500:
            instance.breaker.failed(self._now())
            self._count(instance, "error")
        else:
            instance.breaker.succeeded()
            self._count(instance, "ok")
        return response, payload

    async def _relay(
        self,
        instance: Instance,
        response: aiohttp.ClientResponse,
        payload: bytes | None,
        send: Send,
    ) -> None:
        """The instance's status, headers and body: `payload` when it was read whole,
        otherwise as it comes."""
        headers = [
            (name.lower(), value)
            for name, value in response.raw_headers
            if name.lower() not in _NOT_RETURNED
        ]
        try:
            if payload is not None:
                await send(
                    {"type": "http.response.start", "status": response.status, "headers": headers}
                )
                await send({"type": "http.response.body", "body": payload})
                return
            await send(
                {"type": "http.response.start", "status": response.status, "headers": headers}
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, TimeoutError):
            # The body broke off: nothing to answer with now, the connection is dropped.
            instance.breaker.failed(self._now())
            raise
        finally:
            response.release()


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    more = True
    while more:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _send_error(send: Send, status: int, type_: str, code: str, message: str) -> None:
    payload = orjson.dumps(error_body(type_, code, message))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
