from __future__ import annotations

from typing import Any

import httpx
import pytest

GOOD_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
CHARGE_DECLINED_CARD = {**GOOD_CARD, "number": "4000000000000341"}


class BillingDriver:
    """Small helpers that drive the public API the way a tenant's integration would."""

    def __init__(self, api: httpx.AsyncClient):
        self.api = api

    async def post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.api.post(path, json=body or {})
        assert response.status_code == 200, (path, response.text)
        return response.json()

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.api.get(path, params=params)
        assert response.status_code == 200, (path, response.text)
        return response.json()

    async def plan(self, **fields: Any) -> dict[str, Any]:
        product = await self.post("/v1/products", {"name": fields.pop("product", "Pro")})
        body = {
            "product_id": product["id"],
            "currency": "USD",
            "amount": 1000,
            "interval": "month",
            **fields,
        }
        return await self.post("/v1/plans", body)

    async def customer(
        self, card: dict[str, Any] | None = GOOD_CARD, **fields: Any
    ) -> dict[str, Any]:
        customer = await self.post("/v1/customers", {"email": "ada@example.com", **fields})
        if card is not None:
            await self.post(f"/v1/customers/{customer['id']}/payment-methods", {"card": card})
        return customer

    async def clock(self, frozen_time: str) -> dict[str, Any]:
        return await self.post("/v1/test-clocks", {"frozen_time": frozen_time})

    async def advance(self, clock: dict[str, Any], frozen_time: str) -> dict[str, Any]:
        return await self.post(
            f"/v1/test-clocks/{clock['id']}/advance", {"frozen_time": frozen_time}
        )

    async def renewal_will_fail(
        self, start: str = "2025-01-01T00:00:00Z", **plan: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """An active, paid subscription on a test clock whose customer then makes a card
        declined at charge the default: (clock, customer, subscription)."""
        clock = await self.clock(start)
        plan_ = await self.plan(amount=1000, **plan)
        customer = await self.customer(test_clock_id=clock["id"])
        sub = await self.post(
            "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan_["id"]}
        )
        assert sub["status"] == "active"
        await self.post(
            f"/v1/customers/{customer['id']}/payment-methods",
            {"card": CHARGE_DECLINED_CARD, "set_default": True},
        )
        return clock, customer, sub

    async def orders(self, subscription_id: str) -> list[dict[str, Any]]:
        page = await self.get("/v1/orders", subscription_id=subscription_id, limit=100)
        return sorted(page["data"], key=lambda o: o["period_start"])


@pytest.fixture
def billing(api: httpx.AsyncClient) -> BillingDriver:
    return BillingDriver(api)
