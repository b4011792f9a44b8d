"""Each service as its own app: internal endpoints behind the internal token and out of the
public docs, the public routes behind the gateway's middleware, and the HTTP plumbing of the
clients (request ids, timeouts, errors) against real servers on loopback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from recur.kit.errors import PaymentDeclined, ServiceUnavailable
from recur.kit.http import error_body
from recur.kit.request_id import request_id_var
from recur.kit.service_client import INTERNAL_TOKEN_HEADER, ServiceClient, ServiceSession
from recur.runtime import build_runtime
from recur.service_app import create_service_app

from .conftest import INTERNAL_TOKEN, ServedApp


@pytest.fixture
def adapter() -> str:
    """These tests are about the HTTP adapter only."""
    return "http"


async def test_internal_endpoints_need_the_token(service_urls, tenant) -> None:
    url = f"{service_urls['customers']}/internal/customers/get"
    body = {"tenant_id": tenant.id, "customer_id": "cus_nope"}
    async with httpx.AsyncClient() as http:
        for headers in ({}, {INTERNAL_TOKEN_HEADER: "not-the-token"}):
            response = await http.post(url, json=body, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_internal_token"
        # An API key is no internal token.
        response = await http.post(
            url, json=body, headers={"Authorization": f"Bearer {tenant.key}"}
        )
        assert response.status_code == 401
        response = await http.post(url, json=body, headers={INTERNAL_TOKEN_HEADER: INTERNAL_TOKEN})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "resource_missing"


async def test_bad_internal_calls_are_4xx(service_urls) -> None:
    token = {INTERNAL_TOKEN_HEADER: INTERNAL_TOKEN}
    base = f"{service_urls['orders']}/internal/orders"
    async with httpx.AsyncClient(headers=token) as http:
        missing = await http.post(f"{base}/get", json={"order_id": "ord_1"})
        assert missing.status_code == 400
        assert missing.json()["error"]["param"] == "tenant_id"
        not_json = await http.post(
            f"{base}/get", content=b"{nope", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 400
        wrong_type = await http.post(f"{base}/get-many", json={"tenant_id": "t", "order_ids": 3})
        assert wrong_type.status_code == 400
        assert wrong_type.json()["error"]["code"] == "parameter_invalid"
        unknown = await http.post(f"{base}/cancel-everything", json={"tenant_id": "t"})
        assert unknown.status_code == 404
        # Another service's internal endpoints are not served here.
        elsewhere = await http.post(
            f"{service_urls['orders']}/internal/customers/get",
            json={"tenant_id": "t", "customer_id": "cus_1"},
        )
        assert elsewhere.status_code == 404
        assert (await http.get(f"{base}/get")).status_code in (404, 405)


async def test_public_routes_and_docs_per_service(service_urls, tenant, make_customer) -> None:
    customer = await make_customer(name="Ada")
    key = {"Authorization": f"Bearer {tenant.key}"}
    async with httpx.AsyncClient(headers=key) as http:
        got = await http.get(f"{service_urls['customers']}/v1/customers/{customer['id']}")
        assert got.status_code == 200 and got.json() == customer
        assert (await http.get(f"{service_urls['customers']}/v1/orders")).status_code == 404
        unauthenticated = await http.get(
            f"{service_urls['customers']}/v1/customers", headers={"Authorization": ""}
        )
        assert unauthenticated.status_code == 401
        # The orders service makes an order by asking customers over HTTP.
        order = await http.post(
            f"{service_urls['orders']}/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "Widget", "unit_amount": 900, "quantity": 2}],
            },
            headers={"Idempotency-Key": "order-1"},
        )
        assert order.status_code == 200, order.text
        assert order.json()["total"] == 1800
        # Replayed at once: the first response is stored before its last byte is sent.
        replay = await http.post(
            f"{service_urls['orders']}/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "Widget", "unit_amount": 900, "quantity": 2}],
            },
            headers={"Idempotency-Key": "order-1"},
        )
        assert replay.headers.get("idempotent-replayed") == "true"
        assert replay.json()["id"] == order.json()["id"]

        for name, prefix in (("payments", "/v1/payments"), ("subscriptions", "/v1/plans")):
            base = service_urls[name]
            assert (await http.get(f"{base}/healthz")).json() == {"status": "ok"}
            assert (await http.get(f"{base}/docs")).status_code == 200
            paths = (await http.get(f"{base}/openapi.json")).json()["paths"]
            assert prefix in paths
            assert not [p for p in paths if p.startswith("/internal")]
            assert "/v1/customers" not in paths


# A stand-in upstream for the plumbing every HTTP client shares: it tells what it received.
async def _echo(request: Request) -> Response:
    return JSONResponse(
        {
            "request_id": request.headers.get("x-request-id"),
            "token": request.headers.get(INTERNAL_TOKEN_HEADER.lower()),
            "body": await request.json(),
        }
    )


async def _slow(_request: Request) -> Response:
    await asyncio.sleep(0.6)
    return JSONResponse({})


async def _broken(_request: Request) -> Response:
    return PlainTextResponse("upstream exploded", status_code=500)


async def _declined(_request: Request) -> Response:
    body = error_body("card_error", "insufficient_funds", "no money", "card")
    body["error"]["payment"] = {"id": "pay_1", "status": "failed"}
    return JSONResponse(body, status_code=402)


async def _wrong_shape(_request: Request) -> Response:
    return JSONResponse({"unexpected": True})


@pytest.fixture
async def echo() -> Any:
    routes = [
        Route(f"/internal/echo/{name}", endpoint, methods=["POST"])
        for name, endpoint in {
            "echo": _echo,
            "slow": _slow,
            "broken": _broken,
            "declined": _declined,
            "wrong-shape": _wrong_shape,
        }.items()
    ]
    served = ServedApp(Starlette(routes=routes))
    await served.start()
    yield served.url
    await served.stop()


async def test_client_plumbing(echo: str) -> None:
    session = ServiceSession(timeout_seconds=0.2)
    client = ServiceClient("echo", echo, session, INTERNAL_TOKEN)
    anything = TypeAdapter(dict[str, Any])
    try:
        token = request_id_var.set("req_contract_1")
        try:
            seen = await client.call("echo", {"tenant_id": "ten_1", "n": 1}, anything)
        finally:
            request_id_var.reset(token)
        assert seen == {
            "request_id": "req_contract_1",
            "token": INTERNAL_TOKEN,
            "body": {"tenant_id": "ten_1", "n": 1},
        }
        # Outside any request (a bill-run worker) no id is made up.
        assert (await client.call("echo", {}, anything))["request_id"] is None

        with pytest.raises(ServiceUnavailable, match="did not answer slow"):
            await client.call("slow", {}, anything)
        with pytest.raises(ServiceUnavailable, match="500"):
            await client.call("broken", {}, anything)
        with pytest.raises(ServiceUnavailable, match="unexpected body"):
            await client.call("wrong-shape", {}, TypeAdapter(list[int]))
        with pytest.raises(PaymentDeclined) as declined:
            await client.call("declined", {}, anything)
        assert (declined.value.code, declined.value.param) == ("insufficient_funds", "card")
        assert declined.value.payment == {"id": "pay_1", "status": "failed"}
    finally:
        await session.close()


async def test_unreachable_service_is_a_503(settings, tenant, make_customer) -> None:
    customer = await make_customer()
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{sock.getsockname()[1]}"
    rt = build_runtime(
        settings.model_copy(
            update={"service_urls": {"customers": nobody}, "internal_token": INTERNAL_TOKEN}
        ),
        local_services={"orders"},
    )
    try:
        with pytest.raises(ServiceUnavailable):
            await rt.customers.get(tenant.id, customer["id"])
        app = create_service_app(rt, "orders")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://orders.test",
            headers={"Authorization": f"Bearer {tenant.key}"},
        ) as http:
            response = await http.post(
                "/v1/orders",
                json={
                    "customer_id": customer["id"],
                    "lines": [{"description": "Widget", "unit_amount": 900, "quantity": 1}],
                },
            )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
    finally:
        await rt.close()


async def test_subscribe_and_renew_across_service_processes(service_urls, tenant) -> None:
    """The subscribe flow and a bill run (a test clock's advance), each step sent to the
    process of the service that owns it, every call between services over HTTP."""
    key = {"Authorization": f"Bearer {tenant.key}"}

    async with httpx.AsyncClient(headers=key) as http:

        async def post(service: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = await http.post(f"{service_urls[service]}{path}", json=body)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        clock = await post(
            "subscriptions", "/v1/test-clocks", {"frozen_time": "2031-03-01T00:00:00Z"}
        )
        customer = await post(
            "customers", "/v1/customers", {"currency": "USD", "test_clock_id": clock["id"]}
        )
        card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
        await post("payments", f"/v1/customers/{customer['id']}/payment-methods", {"card": card})
        product = await post("subscriptions", "/v1/products", {"name": "Pro"})
        plan = await post(
            "subscriptions",
            "/v1/plans",
            {"product_id": product["id"], "currency": "USD", "amount": 1999, "interval": "month"},
        )
        subscription = await post(
            "subscriptions",
            "/v1/subscriptions",
            {"customer_id": customer["id"], "plan_id": plan["id"]},
        )
        assert subscription["status"] == "active"

        await post(
            "subscriptions",
            f"/v1/test-clocks/{clock['id']}/advance",
            {"frozen_time": "2031-04-02T00:00:00Z"},
        )
        renewed = (
            await http.get(f"{service_urls['subscriptions']}/v1/subscriptions/{subscription['id']}")
        ).json()
        assert renewed["status"] == "active"
        assert renewed["current_period_start"].startswith("2031-04-01")
        orders = (
            await http.get(
                f"{service_urls['orders']}/v1/orders",
                params={"subscription_id": subscription["id"]},
            )
        ).json()["data"]
        assert sorted((o["total"], o["status"]) for o in orders) == [
            (1999, "paid"),
            (1999, "paid"),
        ]
