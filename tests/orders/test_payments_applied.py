"""`payment.succeeded` events pay orders: once per event, never past the total."""

from __future__ import annotations

from typing import Any

from recur.kit.events import Event
from recur.kit.ids import new_id
from recur.payments.schemas import Payment


def payment_event(
    runtime, tenant_id: str, order: dict[str, Any], amount: int, order_id: str | None = ""
) -> Event:
    now = runtime.clock.now()
    payment = Payment(
        id=new_id("pay"),
        customer_id=order["customer_id"],
        order_id=order["id"] if order_id == "" else order_id,
        amount=amount,
        currency=order["currency"],
        status="succeeded",
        failure_code=None,
        failure_message=None,
        amount_refunded=0,
        refunded=False,
        payment_method_id=None,
        gateway="test",
        gateway_reference="ch_1",
        description=None,
        created=now,
    )
    return Event(
        new_id("evt"),
        "payments",
        tenant_id,
        "payment.succeeded",
        payment.model_dump(mode="json"),
        now,
    )


async def test_payment_event_pays_the_order_once(
    api, tenant, runtime, make_customer, make_order
) -> None:
    customer = await make_customer(currency="USD")
    order = await make_order(customer["id"], unit_amount=1500)
    event = payment_event(runtime, tenant.id, order, 1500)
    await runtime.bus.deliver([event])
    await runtime.bus.deliver([event])  # redelivered: applied once

    paid = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert paid["status"] == "paid"
    assert paid["amount_paid"] == 1500
    assert paid["amount_due"] == 0
    assert paid["paid_at"] is not None

    history = (await api.get(f"/v1/customers/{customer['id']}/billing-history")).json()["data"]
    entries = {entry["id"]: entry for entry in history}
    assert entries[order["id"]]["object"] == "order"
    assert entries[order["id"]]["status"] == "paid"
    assert entries[order["id"]]["amount"] == 1500
    assert entries[event.payload["id"]]["order_id"] == order["id"]


async def test_partial_payments_add_up(api, tenant, runtime, make_customer, make_order) -> None:
    customer = await make_customer(currency="JPY")
    order = await make_order(customer["id"], unit_amount=1000)
    await runtime.bus.deliver([payment_event(runtime, tenant.id, order, 400)])
    partly = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (partly["status"], partly["amount_paid"], partly["amount_due"]) == ("open", 400, 600)
    # A partly paid order cannot be voided.
    assert (await api.post(f"/v1/orders/{order['id']}/void")).status_code == 409

    await runtime.bus.deliver([payment_event(runtime, tenant.id, order, 600)])
    paid = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (paid["status"], paid["amount_paid"], paid["amount_due"]) == ("paid", 1000, 0)

    # A further payment on a paid order does not push amount_paid past the total.
    await runtime.bus.deliver([payment_event(runtime, tenant.id, order, 1000)])
    after = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (after["status"], after["amount_paid"]) == ("paid", 1000)
    assert after["paid_at"] == paid["paid_at"]


async def test_uncollectible_order_can_still_be_paid(
    api, tenant, runtime, make_customer, make_order
) -> None:
    customer = await make_customer(currency="USD")
    order = await make_order(customer["id"])
    await api.post(f"/v1/orders/{order['id']}/mark-uncollectible")
    await runtime.bus.deliver([payment_event(runtime, tenant.id, order, 1000)])
    paid = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (paid["status"], paid["amount_paid"]) == ("paid", 1000)


async def test_payments_of_no_order_of_ours_change_nothing(
    api, tenant, other_tenant, runtime, make_customer, make_order
) -> None:
    customer = await make_customer(currency="USD")
    order = await make_order(customer["id"])
    voided = await make_order(customer["id"])
    await api.post(f"/v1/orders/{voided['id']}/void")
    await runtime.bus.deliver(
        [
            payment_event(runtime, tenant.id, order, 1000, order_id=None),
            payment_event(runtime, tenant.id, order, 1000, order_id="ord_unknown"),
            # Another tenant's event naming our order.
            payment_event(runtime, other_tenant.id, order, 1000),
            payment_event(runtime, tenant.id, voided, 1000),
            payment_event(runtime, tenant.id, {**order, "currency": "EUR"}, 1000),
        ]
    )
    unchanged = (await api.get(f"/v1/orders/{order['id']}")).json()
    assert (unchanged["status"], unchanged["amount_paid"]) == ("open", 0)
    still_void = (await api.get(f"/v1/orders/{voided['id']}")).json()
    assert (still_void["status"], still_void["amount_paid"]) == ("void", 0)
