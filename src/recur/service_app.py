"""One service as its own process (distributed mode): `recur serve --service NAME`.

The process serves the service's public `/v1` routes, behind the same gateway middleware as the
embedded app (API keys, tenants, rate limits, idempotency; a request the gateway process
forwards with the internal token comes with its tenant resolved and its rate limit spent),
and its internal endpoints (`/internal/<service>/...`), which answer the other services' HTTP
clients and take the shared internal token instead of an API key. The two halves are two ASGI
apps: the public one is mounted under the process's app, so its middleware and its OpenAPI
document (`/docs`) never see the internal endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from fastapi import APIRouter, FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException

from recur.app import DESCRIPTION, _every, rate_limiter
from recur.customers import api as customers_api
from recur.customers import internal_api as customers_internal
from recur.gateway.keys import KeyResolver
from recur.gateway.middleware import (
    AuthMiddleware,
    IdempotencyMiddleware,
    InputGuardMiddleware,
    RequestIdMiddleware,
)
from recur.kit.http import install_error_handlers
from recur.kit.service_client import InternalTokenMiddleware
from recur.operations import instrument_process, metered_bill_run
from recur.orders import api as orders_api
from recur.orders import internal_api as orders_internal
from recur.payments import api as payments_api
from recur.payments import dunning_api, gateway_config_api, webhooks_api
from recur.payments import internal_api as payments_internal
from recur.payments.reconcile import RECONCILE_EVERY_SECONDS, reconcile
from recur.runtime import Runtime
from recur.settings import SERVICE_NAMES
from recur.subscriptions import adjustments_api
from recur.subscriptions import api as subscriptions_api
from recur.subscriptions import internal_api as subscriptions_internal

PUBLIC_ROUTERS: dict[str, tuple[APIRouter, ...]] = {
    "customers": (customers_api.router,),
    "subscriptions": (
        subscriptions_api.catalog_router,
        adjustments_api.coupon_router,
        adjustments_api.tax_rate_router,
        subscriptions_api.router,
        subscriptions_api.test_clock_router,
    ),
    "orders": (orders_api.router,),
    "payments": (
        payments_api.router,
        payments_api.seed_router,
        dunning_api.router,
        gateway_config_api.gateway_router,
        gateway_config_api.routing_router,
        webhooks_api.webhook_router,
        webhooks_api.operator_router,
    ),
}
INTERNAL_ROUTERS: dict[str, APIRouter] = {
    "customers": customers_internal.router,
    "subscriptions": subscriptions_internal.router,
    "orders": orders_internal.router,
    "payments": payments_internal.router,
}
assert set(PUBLIC_ROUTERS) == set(INTERNAL_ROUTERS) == set(SERVICE_NAMES)


def create_service_app(rt: Runtime, name: str) -> FastAPI:
    """The app of one service's process. `rt` must run `name` in-process (build it with
    `build_runtime(settings, local_services={name})`)."""
    if name not in SERVICE_NAMES:
        raise ValueError(f"unknown service {name!r}: one of {', '.join(SERVICE_NAMES)}")
    settings = rt.settings
    ttl = timedelta(hours=settings.idempotency_ttl_hours)

    public = FastAPI(title=f"Recur {name}", version="0.1.0", description=DESCRIPTION)
    public.state.runtime = rt
    install_error_handlers(public)
    for router in PUBLIC_ROUTERS[name]:
        public.include_router(router)
    # As in the embedded app; the request id is set by the process's app around this one.
    public.add_middleware(IdempotencyMiddleware, db=rt.db, clock=rt.clock, ttl=ttl)
    public.add_middleware(InputGuardMiddleware)
    public.add_middleware(
        AuthMiddleware,
        resolver=KeyResolver(rt.db),
        limiter=rate_limiter(settings),
        internal_token=settings.internal_token,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if settings.scheduler_enabled:
            idempotency = IdempotencyMiddleware(public, rt.db, rt.clock, ttl)
            jobs: list[tuple[float, Callable[[], Awaitable[object]], str]] = [
                (
                    settings.outbox_sweep_interval_seconds,
                    rt.bus.redeliver_pending,
                    "event redelivery",
                ),
                (3600.0, idempotency.purge_expired, "idempotency purge"),
            ]
            # The schedules of the embedded app, each in the process of the service it belongs to.
            if name == "subscriptions":
                bill_run = metered_bill_run(rt, app.state.metrics)
                jobs.append((settings.bill_run_interval_seconds, bill_run, "bill run"))
            if name == "payments":
                jobs.append(
                    (
                        settings.bill_run_interval_seconds,
                        lambda: rt.payments.run_due_retries(None, rt.clock.now(), None),
                        "dunning retries",
                    )
                )
                jobs.append((RECONCILE_EVERY_SECONDS, lambda: reconcile(rt), "payment reconciler"))
            tasks = [asyncio.create_task(_every(s, job, what)) for s, job, what in jobs]
        if rt.bus.transport is not None:
            # Events through Redis Streams: this process applies its services' share.
            tasks.append(asyncio.create_task(rt.bus.consume_forever()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await rt.close()

    # The process's own docs are off: /docs and /openapi.json are the public app's.
    app = FastAPI(
        title=f"Recur {name} service",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = rt
    install_error_handlers(app)
    app.include_router(INTERNAL_ROUTERS[name])

    @app.api_route(
        "/internal/{path:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def no_such_internal_endpoint(path: str) -> None:
        # Not this service's: a 404, not the public app's demand for an API key.
        raise StarletteHTTPException(404, f"no internal endpoint /internal/{path} on {name}")

    app.add_middleware(InternalTokenMiddleware, token=settings.internal_token)
    app.add_middleware(RequestIdMiddleware)
    instrument_process(app, rt, bill_run=name == "subscriptions")
    # Last: the mount at the root takes every path the routes above do not.
    app.mount("/", public)
    return app
