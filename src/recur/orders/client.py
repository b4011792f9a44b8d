"""How other services talk to the Order Processing Service."""

from __future__ import annotations

from typing import Protocol

from recur.orders.schemas import Order, SubscriptionOrderDraft


class OrdersClient(Protocol):
    async def get(self, tenant_id: str, order_id: str) -> Order:
        """The order; NotFound when it is not this tenant's."""
        ...

    async def create_subscription_order(
        self, tenant_id: str, draft: SubscriptionOrderDraft
    ) -> Order:
        """Create and finalize the order of one subscription period.

        Idempotent by (subscription_id, period_start): asking again returns the first order.
        """
        ...
