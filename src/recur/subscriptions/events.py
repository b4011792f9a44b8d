"""What the Subscription Manager learns from other services' events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.kit.events import Event, EventBus
from recur.subscriptions import repository as repo
from recur.subscriptions.tables import inbox, subscriptions

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime


def subscribe(bus: EventBus, rt: Runtime) -> None:
    async def order_paid(uow: UnitOfWork, event: Event) -> None:
        """A subscription whose current period's order is paid late (a retry, a new card, a
        payment by hand) becomes active again."""
        from recur.subscriptions.service import OUTBOX

        order = event.payload
        if not order.get("subscription_id"):
            return
        row = await repo.get_subscription(
            uow, event.tenant_id, order["subscription_id"], for_update=True
        )
        if row is None or row.status not in ("incomplete", "past_due"):
            return
        if row.latest_order_id != order["id"]:
            return  # an older period's order: the current one is still unpaid
        await repo.update(
            uow,
            subscriptions,
            event.tenant_id,
            row.id,
            {"status": "active", "updated": rt.clock.now()},
        )
        updated = await repo.get_subscription(uow, event.tenant_id, row.id)
        await OUTBOX.record(
            uow,
            event.tenant_id,
            "subscription.updated",
            repo.to_subscription(updated).model_dump(mode="json"),
            rt.clock.now(),
        )

    bus.subscribe("order.paid", "subscriptions", inbox, order_paid)
