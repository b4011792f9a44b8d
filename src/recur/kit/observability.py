"""Health, readiness and Prometheus metrics for any Recur process (the embedded server, a
service process, the gateway).

`instrument(app, metrics, checks)` gives a FastAPI app three routes, outside `/v1`, without
authentication and left out of the public OpenAPI schema:

- `GET /healthz`: the process is alive. 200 `{"status": "ok"}`; checks nothing else, so a
  database outage never gets a process restarted by its liveness probe.
- `GET /readyz`: the process can serve. Runs every readiness check (the database with a
  `SELECT 1`; Redis with a `PING` when one is configured) at once, each with a timeout; 200
  when all pass, else 503 naming the ones that failed.
- `GET /metrics`: the Prometheus text exposition of the app's own registry. Each app has its
  own `CollectorRegistry` (never the global default), so several apps in one process (the
  tests, a topology started in process) keep separate counts.

Metric names (the ones marked *reserved* are added by the gateway and the cache on
`Metrics.registry`; their names are fixed here so dashboards can rely on them):

- `recur_http_requests_total` (counter; method, route, status): requests answered.
- `recur_http_request_duration_seconds` (histogram; method, route, status): time to answer.
- `recur_rate_limit_rejections_total` (counter; route): requests refused with 429.
- `recur_bill_run_subscriptions_total` (counter; action): subscriptions the bill run carried
  out, by action (renewed, failed, canceled, error).
- `recur_bill_run_due_subscriptions` (gauge): subscriptions with an action due now.
- `recur_bill_run_last_finished_timestamp_seconds` (gauge): when this process last finished
  a bill run.
- `recur_outbox_undelivered_events` (gauge; service): events in a service's outbox not
  delivered yet.
- `recur_outbox_oldest_undelivered_age_seconds` (gauge; service): the age of the oldest of
  them; 0 when none.
- `recur_circuit_breaker_state` (gauge; upstream), *reserved*: 0 closed, 1 half-open, 2 open;
  the gateway's label is one service instance, `customers=http://10.0.0.1:8101`.
- `recur_upstream_requests_total` (counter; upstream, outcome), *reserved*: requests the
  gateway sent to a service instance; `outcome` `ok`, `error` (5xx) or `unreachable`.
- `recur_cache_requests_total` (counter; cache, result), *reserved*: cache lookups, `result`
  `hit` or `miss`.

`route` is the route's template (`/v1/customers/{customer_id}`), never the raw path, so no id
ever becomes a label; a path no route matches is `unmatched`.

Gauges read from the database are computed when Prometheus scrapes, by the callbacks given to
`Metrics.on_scrape` (one query per outbox, one count of due subscriptions): nothing polls the
database between scrapes, and a failing callback leaves its gauges as they were without failing
the scrape.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from recur.kit.clock import Clock
    from recur.kit.db import Database
    from recur.kit.events import Outbox

log = logging.getLogger("recur.observability")

Check = Callable[[], Awaitable[object]]
ScrapeCallback = Callable[[], Awaitable[None]]

UNMATCHED = "unmatched"
CHECK_TIMEOUT_SECONDS = 2.0
# Latencies from a cached read (a millisecond) to a bill-run batch call (seconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """One app's metrics, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._scrape_callbacks: list[ScrapeCallback] = []
        labels = ("method", "route", "status")
        self.requests = Counter(
            "recur_http_requests", "Requests answered.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "recur_http_request_duration_seconds",
            "Time to answer a request.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rate_limit_rejections = Counter(
            "recur_rate_limit_rejections",
            "Requests refused by the rate limit (429).",
            ("route",),
            registry=self.registry,
        )
        self.bill_run_subscriptions = Counter(
            "recur_bill_run_subscriptions",
            "Subscriptions the bill run carried out, by action.",
            ("action",),
            registry=self.registry,
        )
        self.bill_run_due = Gauge(
            "recur_bill_run_due_subscriptions",
            "Subscriptions with an action due now.",
            registry=self.registry,
        )
        self.bill_run_last_finished = Gauge(
            "recur_bill_run_last_finished_timestamp_seconds",
            "When this process last finished a bill run (Unix time).",
            registry=self.registry,
        )
        self.outbox_undelivered = Gauge(
            "recur_outbox_undelivered_events",
            "Events in a service's outbox not delivered yet.",
            ("service",),
            registry=self.registry,
        )
        self.outbox_oldest_age = Gauge(
            "recur_outbox_oldest_undelivered_age_seconds",
            "Age of the oldest undelivered event in a service's outbox (0 when none).",
            ("service",),
            registry=self.registry,
        )

    def on_scrape(self, callback: ScrapeCallback) -> None:
        """Run `callback` (which sets gauges) before each exposition."""
        self._scrape_callbacks.append(callback)

    def count_bill_run(self, actions: Mapping[str, str]) -> None:
        """Count one bill-run batch's actions (subscription id -> action)."""
        for action in actions.values():
            self.bill_run_subscriptions.labels(action).inc()

    async def exposition(self) -> bytes:
        """The registry in Prometheus text format, gauges refreshed first."""
        for callback in self._scrape_callbacks:
            try:
                await asyncio.wait_for(callback(), CHECK_TIMEOUT_SECONDS)
            except Exception as error:  # a scrape still reports the request counts
                log.warning("metrics callback %s failed: %r", _name(callback), error)
        return generate_latest(self.registry)


def _name(callback: object) -> str:
    return getattr(callback, "__qualname__", None) or repr(callback)


class RouteTemplates:
    """The route template a request is for, when no route ran: the gateway's middleware
    answers some requests (401, 429, 413) before the router sees them.

    Matched against the OpenAPI paths of the app and of the FastAPI apps mounted in it (a
    service process mounts its public app), which are the routes' templates in the order the
    router tries them: unlike the router's internal route objects, the schema is a stable
    interface of FastAPI. A path no documented route matches is `unmatched`."""

    def __init__(self, app: FastAPI):
        self._app = app
        self._schemas: list[dict[str, Any]] = []
        self._patterns: list[tuple[re.Pattern[str], str, frozenset[str]]] = []

    def _documented(self) -> list[tuple[str, dict[str, Any]]]:
        """(mount prefix, OpenAPI schema) of the app and of each FastAPI app mounted in it;
        FastAPI caches each schema until its routes change."""
        apps = [("", self._app)] + [
            (route.path, route.app)
            for route in self._app.routes
            if isinstance(route, Mount) and isinstance(route.app, FastAPI)
        ]
        return [(prefix, app.openapi()) for prefix, app in apps]

    def _compiled(self) -> list[tuple[re.Pattern[str], str, frozenset[str]]]:
        documented = self._documented()
        schemas = [schema for _, schema in documented]
        if len(schemas) != len(self._schemas) or any(
            new is not old for new, old in zip(schemas, self._schemas, strict=False)
        ):
            self._patterns = [
                (
                    re.compile("^" + _PARAMETER.sub("[^/]+", re.escape(prefix + path)) + "$"),
                    prefix + path,
                    frozenset(method.upper() for method in operations),
                )
                for prefix, schema in documented
                for path, operations in schema.get("paths", {}).items()
            ]
            self._schemas = schemas
        return self._patterns

    def __call__(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if path and not isinstance(route, Mount):
            return str(path)  # routed: the router left its route in the scope
        fallback = UNMATCHED
        for pattern, template, methods in self._compiled():
            if pattern.match(scope["path"]):
                if scope["method"] in methods:
                    return template
                if fallback == UNMATCHED:
                    fallback = template  # the router's 405
        return fallback


# `{customer_id}` once re.escape has made it `\{customer_id\}`.
_PARAMETER = re.compile(r"\\\{[^}]*\\\}")


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status.

    Plain ASGI, placed outermost, so it also sees the answers of the gateway's middleware
    (401, 429) that never reach a route."""

    def __init__(self, app: ASGIApp, metrics: Metrics, templates: Callable[[Scope], str]):
        self.app = app
        self.metrics = metrics
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            route = self.templates(scope)
            labels = (scope["method"], route, str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
            if status == 429:
                self.metrics.rate_limit_rejections.labels(route).inc()


async def check_database(db: Database) -> None:
    """Readiness: the database answers `SELECT 1`."""
    async with db.engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


async def check_redis(url: str) -> None:
    """Readiness: Redis answers `PING`."""
    client = Redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _run_check(name: str, check: Check) -> str:
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("readiness: %s timed out", name)
        return "timeout"
    except Exception as error:
        # The reason goes to the log, not the response: /readyz is reachable by anyone who
        # reaches the gateway, and a connection error names internal hosts.
        log.warning("readiness: %s unreachable: %s", name, type(error).__name__, exc_info=True)
        return "unreachable"
    return "ok"


def outbox_lag(
    metrics: Metrics, db: Database, clock: Clock, outboxes: Iterable[Outbox]
) -> ScrapeCallback:
    """A scrape callback setting the outbox gauges: one query per outbox."""
    from recur.kit.db import UnitOfWork

    chosen = list(outboxes)

    async def refresh() -> None:
        now = clock.now()
        for outbox in chosen:
            table = outbox.table
            async with UnitOfWork(db) as uow:
                row: Any = (
                    await uow.execute(
                        sa.select(sa.func.count(), sa.func.min(table.c.created)).where(
                            table.c.delivered_at.is_(None)
                        )
                    )
                ).one()
            count, oldest = row
            metrics.outbox_undelivered.labels(outbox.service).set(count)
            age = (now - oldest).total_seconds() if oldest is not None else 0.0
            metrics.outbox_oldest_age.labels(outbox.service).set(max(age, 0.0))

    return refresh


def instrument(app: FastAPI, metrics: Metrics, checks: Mapping[str, Check]) -> None:
    """Add `/healthz`, `/readyz` and `/metrics` to `app`, and count its requests. Call it
    after the app's other middleware is added: the counting middleware must be outermost."""
    app.state.metrics = metrics

    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz() -> JSONResponse:
        names = list(checks)
        results = await asyncio.gather(*(_run_check(n, checks[n]) for n in names))
        outcome = dict(zip(names, results, strict=True))
        failed = [name for name, result in outcome.items() if result != "ok"]
        if failed:
            return JSONResponse(
                {"status": "unavailable", "failed": failed, "checks": outcome}, status_code=503
            )
        return JSONResponse({"status": "ok", "checks": outcome})

    async def metrics_endpoint() -> Response:
        return Response(await metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    endpoints: dict[str, Callable[[], Awaitable[Any]]] = {
        "/healthz": healthz,
        "/readyz": readyz,
        "/metrics": metrics_endpoint,
    }
    for path, endpoint in endpoints.items():
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(MetricsMiddleware, metrics=metrics, templates=RouteTemplates(app))
