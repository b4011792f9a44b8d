"""Factories for the payment tests: customers, cards and orders made through the public API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

MakeCustomer = Callable[..., Awaitable[dict[str, Any]]]
Attach = Callable[..., Awaitable[httpx.Response]]
MakeOrder = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_customer(api: httpx.AsyncClient) -> MakeCustomer:
    """Create a customer (in USD unless told otherwise; as `api` unless another client is given)."""

    async def make(client: httpx.AsyncClient | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("currency", "USD")
        response = await (client or api).post("/v1/customers", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    return make


@pytest.fixture
def attach(api: httpx.AsyncClient) -> Attach:
    """Attach a card to a customer; returns the raw response."""

    async def attach(
        customer_id: str,
        number: str = "4242424242424242",
        client: httpx.AsyncClient | None = None,
        exp_month: int = 12,
        exp_year: int = 2040,
        **body: Any,
    ) -> httpx.Response:
        card = {"number": number, "exp_month": exp_month, "exp_year": exp_year, "cvc": "123"}
        return await (client or api).post(
            f"/v1/customers/{customer_id}/payment-methods", json={"card": card, **body}
        )

    return attach


@pytest.fixture
def make_order(api: httpx.AsyncClient) -> MakeOrder:
    """An open (finalized) order of one line for the customer."""

    async def make(
        customer_id: str, unit_amount: int = 1000, client: httpx.AsyncClient | None = None
    ) -> dict[str, Any]:
        response = await (client or api).post(
            "/v1/orders",
            json={
                "customer_id": customer_id,
                "lines": [{"description": "x", "unit_amount": unit_amount, "quantity": 1}],
            },
        )
        assert response.status_code == 200, response.text
        return response.json()

    return make
