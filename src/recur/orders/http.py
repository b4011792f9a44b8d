"""The orders client of the distributed mode: the same calls, over HTTP to the Order
Processing Service's internal endpoints (see `internal_api.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import TypeAdapter

from recur.kit.service_client import ServiceClient
from recur.orders.schemas import Order, SubscriptionOrderDraft

_ORDER = TypeAdapter(Order)
_ORDERS_BY_ID = TypeAdapter(dict[str, Order])
_ORDERS = TypeAdapter(list[Order])

# Calls safe to send again when an instance may have got one and died before answering: reads,
# and the subscription orders, made once per (subscription, period start).
IDEMPOTENT_CALLS = frozenset({"get", "get-many", "create-subscription-orders"})


class HttpOrdersClient:
    def __init__(self, upstream: ServiceClient):
        self._call = upstream.call

    async def get(self, tenant_id: str, order_id: str) -> Order:
        return await self._call("get", {"tenant_id": tenant_id, "order_id": order_id}, _ORDER)

    async def get_many(self, tenant_id: str, order_ids: Sequence[str]) -> dict[str, Order]:
        if not order_ids:
            return {}
        body = {"tenant_id": tenant_id, "order_ids": list(order_ids)}
        return await self._call("get-many", body, _ORDERS_BY_ID)

    async def create_subscription_orders(
        self, tenant_id: str, drafts: Sequence[SubscriptionOrderDraft]
    ) -> list[Order]:
        if not drafts:
            return []
        body = {"tenant_id": tenant_id, "drafts": list(drafts)}
        return await self._call("create-subscription-orders", body, _ORDERS)
