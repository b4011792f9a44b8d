"""The embedded application: the gateway in front of all four services, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

from fastapi import FastAPI

from recur.customers import api as customers_api
from recur.gateway.keys import KeyResolver
from recur.gateway.middleware import (
    AuthMiddleware,
    IdempotencyMiddleware,
    InputGuardMiddleware,
    RequestIdMiddleware,
)
from recur.gateway.ratelimit import MemoryTokenBucket, RateLimiter, RedisTokenBucket
from recur.kit.http import install_error_handlers
from recur.operations import instrument_process, metered_bill_run
from recur.orders import api as orders_api
from recur.payments import api as payments_api
from recur.payments import dunning_api, gateway_config_api, webhooks_api
from recur.payments.reconcile import RECONCILE_EVERY_SECONDS, reconcile
from recur.runtime import Runtime
from recur.settings import Settings
from recur.subscriptions import adjustments_api
from recur.subscriptions import api as subscriptions_api

log = logging.getLogger("recur.app")

DESCRIPTION = """Recur's public API. Authenticate with `Authorization: Bearer <secret key>`
(`recur keys create --tenant NAME`). Amounts are integers in the currency's minor unit."""


async def _every(seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:  # the schedule must survive one bad run; the error is logged
            log.exception("scheduled %s failed", name)


def rate_limiter(settings: Settings) -> RateLimiter:
    """The token buckets of API keys: in Redis when configured (shared by every process),
    else in this process's memory."""
    if settings.redis_url:
        return RedisTokenBucket.from_url(
            settings.redis_url, settings.rate_limit_per_second, settings.rate_limit_burst
        )
    return MemoryTokenBucket(settings.rate_limit_per_second, settings.rate_limit_burst)


def create_app(rt: Runtime) -> FastAPI:
    """The whole public API behind the gateway's middleware."""
    settings = rt.settings
    limiter = rate_limiter(settings)
    ttl = timedelta(hours=settings.idempotency_ttl_hours)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = []
        if settings.scheduler_enabled:
            idempotency = IdempotencyMiddleware(app, rt.db, rt.clock, ttl)
            tasks = [
                asyncio.create_task(
                    _every(
                        settings.bill_run_interval_seconds,
                        metered_bill_run(rt, app.state.metrics),
                        "bill run",
                    )
                ),
                asyncio.create_task(
                    _every(
                        settings.bill_run_interval_seconds,
                        lambda: rt.payments.run_due_retries(None, rt.clock.now(), None),
                        "dunning retries",
                    )
                ),
                asyncio.create_task(
                    _every(RECONCILE_EVERY_SECONDS, lambda: reconcile(rt), "payment reconciler")
                ),
                asyncio.create_task(
                    _every(
                        settings.outbox_sweep_interval_seconds,
                        rt.bus.redeliver_pending,
                        "event redelivery",
                    )
                ),
                asyncio.create_task(_every(3600, idempotency.purge_expired, "idempotency purge")),
            ]
        if rt.bus.transport is not None:
            # Events through Redis Streams: this process applies its services' share.
            tasks.append(asyncio.create_task(rt.bus.consume_forever()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            # Let each job finish unwinding (closing its transaction) before the database
            # goes: a job cancelled mid-query and left behind would wait forever on a closed
            # connection.
            await asyncio.gather(*tasks, return_exceptions=True)
            await rt.close()

    app = FastAPI(
        title="Recur",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = rt
    install_error_handlers(app)
    for router in (
        customers_api.router,
        subscriptions_api.catalog_router,
        adjustments_api.coupon_router,
        adjustments_api.tax_rate_router,
        subscriptions_api.router,
        subscriptions_api.test_clock_router,
        orders_api.router,
        payments_api.router,
        payments_api.seed_router,
        dunning_api.router,
        gateway_config_api.gateway_router,
        gateway_config_api.routing_router,
        webhooks_api.webhook_router,
        webhooks_api.operator_router,
    ):
        app.include_router(router)

    # Added innermost first: a request meets RequestId, Auth, InputGuard, then Idempotency.
    app.add_middleware(IdempotencyMiddleware, db=rt.db, clock=rt.clock, ttl=ttl)
    app.add_middleware(InputGuardMiddleware)
    app.add_middleware(AuthMiddleware, resolver=KeyResolver(rt.db), limiter=limiter)
    app.add_middleware(RequestIdMiddleware)
    # /healthz, /readyz, /metrics, and the request metrics, counted outside everything else.
    instrument_process(app, rt)
    return app
