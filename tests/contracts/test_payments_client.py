"""PaymentsClient: the same answers and errors in-process and over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from recur.kit.errors import Conflict, InvalidRequest
from recur.payments.schemas import DunningRunResult

from .conftest import same_error

DECLINES_EVERY_CHARGE = "4000000000000341"


async def test_charge_order(clients, runtime, tenant, make_customer, attach_card, make_order):
    customer = await make_customer()
    card = await attach_card(customer["id"])
    order = await make_order(customer["id"], unit_amount=4200)
    payment = await clients.payments.charge_order(tenant.id, order["id"])
    assert (payment.status, payment.amount, payment.currency) == ("succeeded", 4200, "USD")
    assert (payment.order_id, payment.payment_method_id) == (order["id"], card["id"])
    # Nothing is due on it any more.
    error = await same_error(
        runtime.payments.charge_order(tenant.id, order["id"]),
        clients.payments.charge_order(tenant.id, order["id"]),
    )
    assert isinstance(error, Conflict)


async def test_charge_order_declined_and_without_card(
    clients, runtime, tenant, make_customer, attach_card, make_order
):
    declining = await make_customer()
    await attach_card(declining["id"], DECLINES_EVERY_CHARGE)
    order = await make_order(declining["id"])
    payment = await clients.payments.charge_order(tenant.id, order["id"])
    assert (payment.status, payment.failure_code) == ("failed", "card_declined")

    cardless = await make_customer()
    unpaid = await make_order(cardless["id"])
    error = await same_error(
        runtime.payments.charge_order(tenant.id, unpaid["id"]),
        clients.payments.charge_order(tenant.id, unpaid["id"]),
        code="no_payment_method",
    )
    assert isinstance(error, InvalidRequest)
    await same_error(
        runtime.payments.charge_order(tenant.id, "ord_nope"),
        clients.payments.charge_order(tenant.id, "ord_nope"),
        code="resource_missing",
    )


async def test_charge_orders_in_one_batch(clients, tenant, make_customer, attach_card, make_order):
    good = await make_customer()
    await attach_card(good["id"])
    bad = await make_customer()
    await attach_card(bad["id"], DECLINES_EVERY_CHARGE)
    cardless = await make_customer()
    paid = await make_order(good["id"])
    await clients.payments.charge_order(tenant.id, paid["id"])
    orders = [
        await make_order(good["id"]),
        await make_order(bad["id"]),
        await make_order(cardless["id"]),
        paid,
    ]
    charges = await clients.payments.charge_orders(tenant.id, [o["id"] for o in orders])
    assert [c.order_id for c in charges] == [o["id"] for o in orders]
    assert [c.outcome for c in charges] == ["succeeded", "failed", "no_payment_method", "paid"]
    assert charges[0].payment is not None and charges[0].payment.status == "succeeded"
    assert charges[1].payment is not None and charges[1].payment.failure_code == "card_declined"
    assert await clients.payments.charge_orders(tenant.id, []) == []


async def test_get_payment_method(clients, runtime, tenant, make_customer, attach_card):
    customer = await make_customer()
    card = await attach_card(customer["id"], "5555555555554444")
    method = await clients.payments.get_payment_method(tenant.id, card["id"])
    assert method == await runtime.payments.get_payment_method(tenant.id, card["id"])
    assert method.model_dump(mode="json") == card
    assert (method.card.brand, method.card.last4) == ("mastercard", "4444")
    await same_error(
        runtime.payments.get_payment_method(tenant.id, "pm_nope"),
        clients.payments.get_payment_method(tenant.id, "pm_nope"),
        code="resource_missing",
    )


async def test_dunning_retries_when_none_are_due(clients, tenant):
    now = datetime.now(UTC)
    assert await clients.payments.next_retry_due(tenant.id, None, now + timedelta(days=30)) is None
    for tenant_id in (tenant.id, None):
        result = await clients.payments.run_due_retries(tenant_id, now, None)
        assert result == DunningRunResult()
