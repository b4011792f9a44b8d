"""Factories for the order tests: customers and orders made through the public API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

MakeCustomer = Callable[..., Awaitable[dict[str, Any]]]
MakeOrder = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_customer(api: httpx.AsyncClient) -> MakeCustomer:
    """Create a customer (as the `api` tenant unless another client is given)."""

    async def make(client: httpx.AsyncClient | None = None, **body: Any) -> dict[str, Any]:
        response = await (client or api).post("/v1/customers", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    return make


@pytest.fixture
def make_order(api: httpx.AsyncClient) -> MakeOrder:
    """Create an order of one line (unless `lines` is given) and expect success."""

    async def make(
        customer_id: str,
        client: httpx.AsyncClient | None = None,
        unit_amount: int = 1000,
        quantity: int = 1,
        **body: Any,
    ) -> dict[str, Any]:
        body.setdefault(
            "lines", [{"description": "Widget", "unit_amount": unit_amount, "quantity": quantity}]
        )
        response = await (client or api).post(
            "/v1/orders", json={"customer_id": customer_id, **body}
        )
        assert response.status_code == 200, response.text
        return response.json()

    return make
