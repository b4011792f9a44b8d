"""The orders client of the embedded mode: the same calls, run in this process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from recur.orders import batch, service
from recur.orders.schemas import Order, SubscriptionOrderDraft

if TYPE_CHECKING:
    from recur.runtime import Runtime


class LocalOrdersClient:
    def __init__(self, runtime: Runtime):
        self._rt = runtime

    async def get(self, tenant_id: str, order_id: str) -> Order:
        return await service.get_order(self._rt, tenant_id, order_id)

    async def get_many(self, tenant_id: str, order_ids: Sequence[str]) -> dict[str, Order]:
        return await batch.get_many(self._rt, tenant_id, order_ids)

    async def create_subscription_orders(
        self, tenant_id: str, drafts: Sequence[SubscriptionOrderDraft]
    ) -> list[Order]:
        return await batch.create_subscription_orders(self._rt, tenant_id, drafts)
