"""What the Customer Information Service learns from other services' events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recur.customers import repository as repo
from recur.customers.schemas import BillingHistoryEntry
from recur.customers.tables import inbox
from recur.kit.events import Event, EventBus

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork

ORDER_EVENTS = ("order.finalized", "order.paid", "order.voided", "order.uncollectible")
PAYMENT_EVENTS = ("payment.succeeded", "payment.failed", "payment.refunded")


async def record_order(uow: UnitOfWork, event: Event) -> None:
    order: dict[str, Any] = event.payload
    entry = BillingHistoryEntry(
        id=order["id"],
        object="order",
        status=order["status"],
        amount=order["total"],
        currency=order["currency"],
        description=f"Order {order['number']}" if order.get("number") else order.get("description"),
        order_id=order["id"],
        created=repo.parse_time(order["created"]),
        updated=event.created,
    )
    await repo.record_history(uow, event.tenant_id, entry, order["customer_id"])


async def record_payment(uow: UnitOfWork, event: Event) -> None:
    payment: dict[str, Any] = event.payload
    status = payment["status"]
    if payment.get("amount_refunded"):
        status = "refunded" if payment.get("refunded") else "partially_refunded"
    entry = BillingHistoryEntry(
        id=payment["id"],
        object="payment",
        status=status,
        amount=payment["amount"],
        currency=payment["currency"],
        description=payment.get("failure_code") or payment.get("description"),
        order_id=payment.get("order_id"),
        created=repo.parse_time(payment["created"]),
        updated=event.created,
    )
    await repo.record_history(uow, event.tenant_id, entry, payment["customer_id"])


async def record_refund(uow: UnitOfWork, event: Event) -> None:
    refund: dict[str, Any] = event.payload
    entry = BillingHistoryEntry(
        id=refund["id"],
        object="refund",
        status=refund["status"],
        amount=refund["amount"],
        currency=refund["currency"],
        description=refund.get("reason"),
        order_id=refund.get("order_id"),
        created=repo.parse_time(refund["created"]),
        updated=event.created,
    )
    await repo.record_history(uow, event.tenant_id, entry, refund["customer_id"])


async def forget_detached_default(uow: UnitOfWork, event: Event) -> None:
    """A detached card stops being the customer's default."""
    method: dict[str, Any] = event.payload
    await repo.clear_default_payment_method(
        uow, event.tenant_id, method["customer_id"], method["id"], event.created
    )


def subscribe(bus: EventBus) -> None:
    bus.subscribe("payment_method.detached", "customers", inbox, forget_detached_default)
    for event_type in ORDER_EVENTS:
        bus.subscribe(event_type, "customers", inbox, record_order)
    for event_type in PAYMENT_EVENTS:
        bus.subscribe(event_type, "customers", inbox, record_payment)
    bus.subscribe("refund.created", "customers", inbox, record_refund)
