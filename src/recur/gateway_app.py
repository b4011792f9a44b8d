"""The gateway as its own process (distributed mode): `recur gateway --upstream NAME=URL,URL`.

The public entry in front of the services' processes: the embedded app's gateway middleware
(request ids, API keys and tenants, token buckets, the input guard), then `gateway.proxy`
forwarding each request to an instance of the service that owns its path. Idempotency stays
with the services: their keys live in the database they share, so every instance, and a retry
on another instance, sees the same key.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from recur.app import DESCRIPTION, rate_limiter
from recur.gateway.keys import KeyResolver
from recur.gateway.middleware import AuthMiddleware, InputGuardMiddleware, RequestIdMiddleware
from recur.gateway.proxy import Proxy, ProxyConfig, RouteTable
from recur.kit.observability import MetricsMiddleware, RouteTemplates
from recur.operations import instrument_process
from recur.runtime import Runtime
from recur.service_app import PUBLIC_ROUTERS
from recur.settings import SERVICE_NAMES, Settings, parse_upstreams


def _public_schema(routers: Any, title: str) -> dict[str, Any]:
    documented = FastAPI(title=title, version="0.1.0", description=DESCRIPTION)
    for router in routers:
        documented.include_router(router)
    return documented.openapi()


def route_templates() -> dict[str, list[str]]:
    """Each service's public route templates, from its own routers."""
    return {
        name: list(_public_schema(routers, name)["paths"])
        for name, routers in PUBLIC_ROUTERS.items()
    }


class _GatewayApp(FastAPI):
    """Its OpenAPI document is the whole public API it forwards, not its own few routes: the
    docs page shows it, and the request metrics take their route templates from it.

    Only a request for one of its own routes (health, readiness, metrics, docs) goes through
    FastAPI. Every other one goes to `forward`: the gateway's middleware and the proxy, without
    the FastAPI and Starlette layers it has no use for (route matching, exception handlers,
    error pages, body limit, telemetry hooks). Measured in process, those layers cost about
    40 us of CPU per forwarded request, a third of what the gateway adds besides its Redis
    call. An exception escaping `forward` still ends as uvicorn's 500, as it did through them.
    """

    public_schema: dict[str, Any]
    own_paths: frozenset[str] = frozenset()
    forward: ASGIApp | None = None

    def openapi(self) -> dict[str, Any]:
        return self.public_schema

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.forward is not None
            and scope["type"] == "http"
            and scope["path"] not in self.own_paths
        ):
            await self.forward(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _own_paths(app: FastAPI) -> frozenset[str]:
    """The paths of the app's own routes, each also with its trailing slash toggled (FastAPI
    answers those with a redirect). They have no parameters: a set lookup finds them."""
    paths = {route.path for route in app.routes if isinstance(route, Route)}
    if any("{" in path for path in paths):
        raise ValueError(f"the gateway's own routes must have fixed paths: {sorted(paths)}")
    return frozenset(paths | {p[:-1] if p.endswith("/") else p + "/" for p in paths})


def gateway_upstreams(settings: Settings, given: list[str] | None = None) -> dict[str, list[str]]:
    """Each service's instances: `given` (`NAME=URL,URL` strings, as `--upstream` takes them),
    else RECUR_GATEWAY_UPSTREAMS, else the service's RECUR_SERVICE_URLS entries. Raises
    ValueError for a malformed entry or a service left without any instance."""
    upstreams = {name: list(urls) for name, urls in settings.service_urls.items()}
    upstreams.update(settings.gateway_upstreams)
    upstreams.update(parse_upstreams(given or []))
    missing = [name for name in SERVICE_NAMES if not upstreams.get(name)]
    if missing:
        raise ValueError(f"no instance of {', '.join(missing)}: give --upstream NAME=URL,URL")
    return upstreams


def create_gateway_app(rt: Runtime, upstreams: Mapping[str, list[str]]) -> FastAPI:
    """The gateway process's app, forwarding to `upstreams` (service name -> instance URLs)."""
    settings = rt.settings
    proxy_config = ProxyConfig(
        internal_token=settings.internal_token,
        timeout_seconds=settings.service_timeout_seconds,
        connect_timeout_seconds=settings.gateway_connect_timeout_seconds,
        health_interval_seconds=settings.gateway_health_interval_seconds,
        breaker_failures=settings.gateway_breaker_failures,
        breaker_cooldown_seconds=settings.gateway_breaker_cooldown_seconds,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await proxy.start()
        try:
            yield
        finally:
            await proxy.stop()
            await rt.close()

    app = _GatewayApp(title="Recur", version="0.1.0", description=DESCRIPTION, lifespan=lifespan)
    app.public_schema = _public_schema(
        [router for routers in PUBLIC_ROUTERS.values() for router in routers], "Recur"
    )
    app.state.runtime = rt
    # Its own routes need no key (they are all public paths) and no input guard.
    app.add_middleware(RequestIdMiddleware)
    metrics = instrument_process(app, rt, bill_run=False)
    proxy = Proxy(RouteTable(route_templates()), upstreams, proxy_config, metrics.registry)
    # A forwarded request meets the request counting, RequestId, Auth, InputGuard, then the
    # proxy: the order of the embedded app's middleware.
    forward: ASGIApp = InputGuardMiddleware(proxy)
    forward = AuthMiddleware(forward, resolver=KeyResolver(rt.db), limiter=rate_limiter(settings))
    forward = RequestIdMiddleware(forward)
    app.forward = MetricsMiddleware(forward, metrics=metrics, templates=RouteTemplates(app))
    app.own_paths = _own_paths(app)

    async def breaker_gauge() -> None:
        proxy.refresh_breaker_gauge()

    metrics.on_scrape(breaker_gauge)
    app.state.proxy = proxy
    return app
