"""What the Customer Information Service learns from other services' events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recur.customers import credits
from recur.customers import repository as repo
from recur.customers.schemas import BillingHistoryEntry
from recur.customers.tables import inbox
from recur.kit.events import Event, EventBus

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork

ORDER_EVENTS = ("order.finalized", "order.paid", "order.voided", "order.uncollectible")
PAYMENT_EVENTS = ("payment.succeeded", "payment.failed", "payment.refunded")


History = tuple[str, BillingHistoryEntry, str]  # (tenant_id, entry, customer_id)


def _order_entry(event: Event) -> History:
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
    return event.tenant_id, entry, order["customer_id"]


def _payment_entry(event: Event) -> History:
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
    return event.tenant_id, entry, payment["customer_id"]


def _refund_entry(event: Event) -> History:
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
    return event.tenant_id, entry, refund["customer_id"]


def _entry(event: Event) -> History:
    if event.type.startswith("order."):
        return _order_entry(event)
    if event.type.startswith("payment."):
        return _payment_entry(event)
    return _refund_entry(event)


async def record_history(uow: UnitOfWork, event: Event) -> None:
    """Bring the billing history up to date with an order, payment or refund event."""
    await record_histories(uow, [event])


async def record_histories(uow: UnitOfWork, events: list[Event]) -> None:
    """The same for many events, in one statement (the bill run's batches)."""
    # An object's later event in the batch carries its newer state (an order finalized, then
    # paid): only that one is written, as the newest-wins upsert would leave it anyway.
    latest = {entry[1].id: entry for entry in map(_entry, events)}
    await repo.record_history_many(uow, list(latest.values()))
    for event in events:
        if event.type == "order.voided":
            # A void order owes nothing: the credit spent on it goes back to the customer,
            # once. Here, with the history: the service's inbox takes each event once.
            order: dict[str, Any] = event.payload
            await credits.unapply_credit_in(
                uow, event.tenant_id, order["customer_id"], order["id"], event.created
            )


async def forget_detached_default(uow: UnitOfWork, event: Event) -> None:
    """A detached card stops being the customer's default."""
    method: dict[str, Any] = event.payload
    await repo.clear_default_payment_method(
        uow, event.tenant_id, method["customer_id"], method["id"], event.created
    )


async def forget_cached_customer(uow: UnitOfWork, event: Event) -> None:
    """A customer's change drops its cached copy once more, from its event. The writer drops it
    right after its commit; should that have been lost (the writer died just after committing,
    or Redis did not answer then), this one is retried with the event until it lands."""
    await uow.cache.delete(repo.cache_key(event.tenant_id, event.payload["id"]), strict=True)


def subscribe(bus: EventBus) -> None:
    bus.subscribe("payment_method.detached", "customers", inbox, forget_detached_default)
    bus.subscribe("customer.updated", "customers", inbox, forget_cached_customer)
    for event_type in (*ORDER_EVENTS, *PAYMENT_EVENTS, "refund.created"):
        bus.subscribe(
            event_type, "customers", inbox, record_history, batch_handler=record_histories
        )
