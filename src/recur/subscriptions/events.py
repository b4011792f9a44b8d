"""What the Subscription Manager learns from other services' events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recur.kit.events import Event, EventBus
from recur.payments.schemas import DunningExhausted
from recur.subscriptions import repository as repo
from recur.subscriptions.tables import OUTBOX, inbox, subscriptions

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime


def subscribe(bus: EventBus, rt: Runtime) -> None:
    async def order_paid(uow: UnitOfWork, event: Event) -> None:
        """A subscription whose current period's order is paid late (a retry, a new card, a
        payment by hand) becomes active again."""
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

    async def dunning_exhausted(uow: UnitOfWork, event: Event) -> None:
        """The last retry of an order's charge failed. A subscription still past due ends
        (`cancel`) or stays, renewing no more (`unpaid`), as the tenant chose."""
        exhausted = DunningExhausted.model_validate(event.payload)
        row = await repo.get_subscription(
            uow, event.tenant_id, exhausted.subscription_id, for_update=True
        )
        # Past due, whichever of its orders ran out of retries: with periods shorter than the
        # retry schedule, a newer order is the latest by then, and it is unpaid too. Paid
        # since (active), paused or ended: nothing to do.
        if row is None or row.status != "past_due":
            return
        if row.pending_period_start is not None:
            return  # a renewal is under way; its charge decides, and its own dunning
        values: dict[str, Any] = {"next_action_at": None, "updated": rt.clock.now()}
        if exhausted.final_action == "cancel":
            at = exhausted.exhausted_at
            values.update(status="canceled", canceled_at=at, ended_at=at, claimed_until=None)
            event_type = "subscription.canceled"
        else:
            values.update(status="unpaid")
            event_type = "subscription.updated"
        await repo.update(uow, subscriptions, event.tenant_id, row.id, values)
        updated = await repo.get_subscription(uow, event.tenant_id, row.id)
        await OUTBOX.record(
            uow,
            event.tenant_id,
            event_type,
            repo.to_subscription(updated).model_dump(mode="json"),
            rt.clock.now(),
        )

    bus.subscribe("order.paid", "subscriptions", inbox, order_paid)
    bus.subscribe("dunning.exhausted", "subscriptions", inbox, dunning_exhausted)
