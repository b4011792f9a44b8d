"""Health, readiness and metrics wired to a process's runtime: what every Recur app gets.

`kit.observability` knows no billing; this is where it meets the runtime (its database, its
Redis, its outboxes) and the bill run. The embedded app and each service's app call
`instrument_process` once, after adding their own middleware.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import Gauge
from redis.exceptions import RedisError

from recur.kit.observability import (
    Check,
    Metrics,
    check_database,
    check_redis,
    instrument,
    outbox_lag,
)
from recur.subscriptions import billing

if TYPE_CHECKING:
    from recur.runtime import Runtime
    from recur.subscriptions.billing import BillRunResult


def readiness_checks(rt: Runtime) -> dict[str, Check]:
    """The database, and Redis when one is configured."""
    checks: dict[str, Check] = {"database": lambda: check_database(rt.db)}
    redis_url = rt.settings.redis_url
    if redis_url:
        checks["redis"] = lambda: check_redis(redis_url)
    return checks


def instrument_process(app: FastAPI, rt: Runtime, *, bill_run: bool = True) -> Metrics:
    """Give `app` /healthz, /readyz and /metrics for this runtime. `bill_run` says whether
    this process serves the subscriptions (it owns the table the due-subscriptions gauge
    counts). The outbox gauges cover the outboxes this runtime's bus delivers."""
    metrics = Metrics()
    rt.cache.instrument(metrics.registry)
    metrics.on_scrape(outbox_lag(metrics, rt.db, rt.clock, rt.bus.outboxes.values()))
    transport = rt.bus.transport
    if transport is not None:
        backlog = Gauge(
            "recur_event_stream_backlog",
            "Events of a service's stream a consumer group has not acknowledged yet "
            "(read and pending, or not read).",
            ("stream", "group"),
            registry=metrics.registry,
        )

        async def stream_backlog() -> None:
            try:
                counts = await transport.pending()
            except (RedisError, OSError):
                return  # /readyz says Redis is down; the gauges keep their last values
            for (service, group), count in counts.items():
                backlog.labels(service, group).set(count)

        metrics.on_scrape(stream_backlog)
    if bill_run:

        async def due_subscriptions() -> None:
            metrics.bill_run_due.set(await billing.count_due(rt))

        metrics.on_scrape(due_subscriptions)
    instrument(app, metrics, readiness_checks(rt))
    return metrics


def metered_bill_run(rt: Runtime, metrics: Metrics) -> Callable[[], Awaitable[BillRunResult]]:
    """The server's scheduled bill run, counting each batch's actions as it goes."""

    async def run() -> BillRunResult:
        result = await billing.run(rt, on_actions=metrics.count_bill_run)
        metrics.bill_run_last_finished.set(time.time())
        return result

    return run
