"""How other services talk to the Order Processing Service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from recur.orders.schemas import Order, SubscriptionOrderDraft


class OrdersClient(Protocol):
    async def get(self, tenant_id: str, order_id: str) -> Order:
        """The order; NotFound when it is not this tenant's."""
        ...

    async def get_many(self, tenant_id: str, order_ids: Sequence[str]) -> dict[str, Order]:
        """The tenant's orders of these ids, by id; ids of no order of its are left out."""
        ...

    async def create_subscription_orders(
        self, tenant_id: str, drafts: Sequence[SubscriptionOrderDraft]
    ) -> list[Order]:
        """Create and finalize the orders of subscription periods, in one batch, and pay what
        the customers' credit can. In the order of `drafts`.

        Idempotent by (subscription_id, period_start): asking again returns the first order.
        """
        ...
