"""The orders client of the embedded mode: the same calls, run in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.orders import service
from recur.orders.schemas import Order, SubscriptionOrderDraft

if TYPE_CHECKING:
    from recur.runtime import Runtime


class LocalOrdersClient:
    def __init__(self, runtime: Runtime):
        self._rt = runtime

    async def get(self, tenant_id: str, order_id: str) -> Order:
        return await service.get_order(self._rt, tenant_id, order_id)

    async def create_subscription_order(
        self, tenant_id: str, draft: SubscriptionOrderDraft
    ) -> Order:
        return await service.create_subscription_order(self._rt, tenant_id, draft)
