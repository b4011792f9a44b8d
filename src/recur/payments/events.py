"""What the Payment Gateway Service learns from other services' events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from recur.kit.events import Event, EventBus
from recur.payments import dunning
from recur.payments import repository as repo
from recur.payments.tables import inbox

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments")


def subscribe(bus: EventBus, rt: Runtime) -> None:
    """Register the payments consumers on `bus`."""

    async def retry_with_new_default(uow: UnitOfWork, event: Event) -> None:
        """A customer's default card changed: its failed renewal charges are retried at once
        with it (those whose last attempt used another card)."""
        customer = event.payload
        card = customer.get("default_payment_method_id")
        if card is None:
            return
        waiting = await repo.open_dunning_of_customer(
            uow, event.tenant_id, customer["id"], not_tried_with=card
        )
        if not waiting:
            return

        async def retry() -> None:
            try:
                await dunning.retry_with_new_default(rt, event.tenant_id, customer["id"])
            except Exception:
                # The event is applied; the scheduled retries still come.
                log.exception("dunning: retry for customer %s failed", customer["id"])

        # Charging calls other services, which must not happen inside this transaction.
        uow.after_commit(retry)

    async def stop_dunning_of_canceled(uow: UnitOfWork, event: Event) -> None:
        """A subscription canceled (by hand, or at its period end) is charged no more: its
        orders' retries stop. An order still open stays open, as Stripe leaves an invoice:
        it can be paid by hand, voided or marked uncollectible. Canceled by dunning itself
        (`payment_failed`), its other unpaid orders run out their own retries as before."""
        subscription = event.payload
        if subscription.get("cancellation_reason") == "payment_failed":
            return
        closed = await repo.close_dunning_of_subscription(
            uow, event.tenant_id, subscription["customer_id"], subscription["id"], rt.clock.now()
        )
        if closed:
            log.info("dunning closed for canceled subscription %s", subscription["id"])

    bus.subscribe("customer.updated", "payments", inbox, retry_with_new_default)
    bus.subscribe("subscription.canceled", "payments", inbox, stop_dunning_of_canceled)
