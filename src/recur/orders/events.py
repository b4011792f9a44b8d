"""What the Order Processing Service learns from other services' events."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.kit.events import Event, EventBus
from recur.orders import batch, service
from recur.orders.tables import inbox
from recur.payments.schemas import DunningExhausted

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime


def subscribe(bus: EventBus, rt: Runtime) -> None:
    async def record_payment(uow: UnitOfWork, event: Event) -> None:
        # The bus's inbox applies each event once; apply_payment is safe on a paid order too.
        await service.apply_payment(uow, event.tenant_id, event.payload, rt.clock.now())

    async def write_off_after_dunning(uow: UnitOfWork, event: Event) -> None:
        # The last retry failed: written off, unless it was paid or voided meanwhile.
        exhausted = DunningExhausted.model_validate(event.payload)
        await service.write_off_after_dunning(
            uow, event.tenant_id, exhausted.order_id, rt.clock.now()
        )

    async def record_payments(uow: UnitOfWork, events: list[Event]) -> None:
        await batch.apply_payments(uow, events, rt.clock.now())

    bus.subscribe(
        "payment.succeeded",
        "orders",
        inbox,
        record_payment,
        batch_handler=record_payments,
        # A payment of no order (an amount charged to a customer) is nothing to orders.
        when=lambda event: event.payload.get("order_id") is not None,
    )
    bus.subscribe("dunning.exhausted", "orders", inbox, write_off_after_dunning)
