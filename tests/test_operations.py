"""What an operator reads from a running Recur process: /healthz, /readyz and /metrics, through
the real app and its middleware, on the real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from recur.app import create_app
from recur.bench import seed
from recur.customers.service import OUTBOX as CUSTOMERS_OUTBOX
from recur.kit.db import UnitOfWork
from recur.operations import metered_bill_run
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings

UNREACHABLE_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:1/recur_nowhere"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def _client(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://recur.test")


async def _samples(client: httpx.AsyncClient) -> dict[tuple[str, frozenset], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _labels(**labels: str) -> frozenset:
    return frozenset(labels.items())


@pytest.fixture
async def anonymous(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with _client(app) as client:
        yield client


async def test_healthz_and_readyz_need_no_key_and_stay_out_of_the_schema(anonymous) -> None:
    alive = await anonymous.get("/healthz")
    assert alive.status_code == 200
    assert alive.json() == {"status": "ok"}
    assert alive.headers["x-request-id"].startswith("req_")

    ready = await anonymous.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ok", "checks": {"database": "ok"}}

    paths = (await anonymous.get("/openapi.json")).json()["paths"]
    assert not {"/healthz", "/readyz", "/metrics"} & set(paths)
    assert (await anonymous.get("/v1/customers")).status_code == 401  # the API still needs a key


async def test_readyz_names_the_database_when_it_is_unreachable() -> None:
    rt = build_runtime(Settings(database_url=UNREACHABLE_POSTGRES, scheduler_enabled=False))
    try:
        async with _client(create_app(rt)) as client:
            assert (await client.get("/healthz")).status_code == 200  # alive all the same
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "status": "unavailable",
                "failed": ["database"],
                "checks": {"database": "unreachable"},
            }
            # /metrics still answers with what it has: the scrape-time gauges fail quietly.
            samples = await _samples(client)
            ready_503 = _labels(method="GET", route="/readyz", status="503")
            assert samples[("recur_http_requests_total", ready_503)] == 1
    finally:
        await rt.close()


async def test_readyz_checks_redis_when_one_is_configured(database_url: str, redis_url) -> None:  # type: ignore[no-untyped-def]
    for url, expected in ((redis_url, 200), (UNREACHABLE_REDIS, 503)):
        rt = build_runtime(Settings(database_url=database_url, redis_url=url))
        try:
            async with _client(create_app(rt)) as client:
                ready = await client.get("/readyz")
        finally:
            await rt.close()
        assert ready.status_code == expected, ready.text
        if expected == 503:
            assert ready.json()["failed"] == ["redis"]
            assert ready.json()["checks"] == {"database": "ok", "redis": "unreachable"}
        else:
            assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}


async def test_requests_are_counted_by_route_template_never_by_raw_path(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    created = await api.post("/v1/customers", json={"email": "ada@example.com", "currency": "USD"})
    assert created.status_code == 200, created.text
    customer_id = created.json()["id"]
    for _ in range(2):
        assert (await api.get(f"/v1/customers/{customer_id}")).status_code == 200
    assert (await api.get("/v1/customers/cus_missing")).status_code == 404
    assert (await anonymous.get(f"/v1/customers/{customer_id}")).status_code == 401
    assert (await api.get("/no/such/path/cus_123")).status_code == 404

    response = await anonymous.get("/metrics")
    assert customer_id not in response.text and "cus_missing" not in response.text
    assert "cus_123" not in response.text
    samples = await _samples(anonymous)
    one = "/v1/customers/{customer_id}"
    assert (
        samples[("recur_http_requests_total", _labels(method="GET", route=one, status="200"))] == 2
    )
    assert (
        samples[("recur_http_requests_total", _labels(method="GET", route=one, status="404"))] == 1
    )
    # Refused by the gateway's auth before any route ran, still under its route's template.
    assert (
        samples[("recur_http_requests_total", _labels(method="GET", route=one, status="401"))] == 1
    )
    unmatched = _labels(method="GET", route="unmatched", status="404")
    assert samples[("recur_http_requests_total", unmatched)] == 1
    created_labels = _labels(method="POST", route="/v1/customers", status="200")
    assert samples[("recur_http_request_duration_seconds_count", created_labels)] == 1
    assert samples[("recur_http_request_duration_seconds_sum", created_labels)] > 0


async def test_rate_limit_rejections_are_counted(runtime: Runtime, tenant) -> None:  # type: ignore[no-untyped-def]
    # An app of its own with a bucket of two requests, for the tenant's key.
    settings = runtime.settings.model_copy(
        update={"rate_limit_per_second": 0.001, "rate_limit_burst": 2}
    )
    rt = build_runtime(settings)
    try:
        async with _client(create_app(rt)) as client:
            client.headers["Authorization"] = f"Bearer {tenant.key}"
            statuses = [(await client.get("/v1/customers")).status_code for _ in range(4)]
            assert statuses == [200, 200, 429, 429]
            samples = await _samples(client)
    finally:
        await rt.close()
    assert samples[("recur_rate_limit_rejections_total", _labels(route="/v1/customers"))] == 2


async def test_outbox_lag_is_read_at_scrape_time(runtime: Runtime, anonymous) -> None:  # type: ignore[no-untyped-def]
    samples = await _samples(anonymous)
    for service in ("customers", "subscriptions", "orders", "payments"):
        assert samples[("recur_outbox_undelivered_events", _labels(service=service))] == 0
        assert (
            samples[("recur_outbox_oldest_undelivered_age_seconds", _labels(service=service))] == 0
        )

    # An event committed without a bus to deliver it: what a crash after commit leaves.
    async with UnitOfWork(runtime.db) as uow:
        recorded_at = runtime.clock.now()
        await CUSTOMERS_OUTBOX.record(
            uow, "ten_x", "customer.updated", {"id": "cus_x"}, recorded_at
        )
        await uow.commit()

    samples = await _samples(anonymous)
    assert samples[("recur_outbox_undelivered_events", _labels(service="customers"))] == 1
    assert samples[("recur_outbox_undelivered_events", _labels(service="orders"))] == 0
    age = samples[("recur_outbox_oldest_undelivered_age_seconds", _labels(service="customers"))]
    assert 0 < age < 60


async def test_bill_run_progress_and_due_subscriptions(app, runtime: Runtime, anonymous) -> None:  # type: ignore[no-untyped-def]
    await seed(runtime, 3, runtime.clock.now())
    samples = await _samples(anonymous)
    assert samples[("recur_bill_run_due_subscriptions", frozenset())] == 3

    # The job the server's schedule runs.
    result = await metered_bill_run(runtime, app.state.metrics)()
    assert result.renewed == 3

    samples = await _samples(anonymous)
    assert samples[("recur_bill_run_subscriptions_total", _labels(action="renewed"))] == 3
    assert samples[("recur_bill_run_due_subscriptions", frozenset())] == 0
    assert samples[("recur_bill_run_last_finished_timestamp_seconds", frozenset())] > 0


async def test_each_app_counts_in_its_own_registry(runtime: Runtime, anonymous) -> None:  # type: ignore[no-untyped-def]
    assert (await anonymous.get("/healthz")).status_code == 200
    async with _client(create_app(runtime)) as other:
        samples = await _samples(other)
    healthz = _labels(method="GET", route="/healthz", status="200")
    assert ("recur_http_requests_total", healthz) not in samples


async def test_a_service_process_reports_its_own_routes(settings: Settings) -> None:
    from recur.service_app import create_service_app

    settings = settings.model_copy(update={"internal_token": "t" * 32})
    rt = build_runtime(settings, local_services={"customers"})
    try:
        async with _client(create_service_app(rt, "customers")) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/v1/customers/cus_1")).status_code == 401
            samples = await _samples(client)
    finally:
        await rt.close()
    refused = _labels(method="GET", route="/v1/customers/{customer_id}", status="401")
    assert samples[("recur_http_requests_total", refused)] == 1
    # This process owns no subscriptions: no due-subscriptions gauge is read here.
    assert ("recur_bill_run_due_subscriptions", frozenset()) in samples  # declared, left at 0
    assert samples[("recur_bill_run_due_subscriptions", frozenset())] == 0
