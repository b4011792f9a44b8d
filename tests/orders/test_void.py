"""Voiding an open order: the ledger reverses what it was owed, and the customer gets back the
credit applied to it, once."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from recur.kit.events import Event
from recur.kit.ids import new_id
from recur.orders import service as order_service
from recur.orders.schemas import Order
from recur.orders.tables import ledger as orders_ledger
from recur.verify import verify

GOOD_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"}
CHARGE_DECLINED_CARD = {**GOOD_CARD, "number": "4000000000000341"}


async def _post(api, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await api.post(path, json=body or {})
    assert response.status_code == 200, (path, response.text)
    return response.json()


async def _get(api, path: str, **params: Any) -> dict[str, Any]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, (path, response.text)
    return response.json()


async def _order_accounts(runtime, order_id: str) -> dict[str, int]:
    """Debits less credits of each account of the orders ledger, for one order."""
    async with runtime.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(
                orders_ledger.c.account,
                sa.func.sum(orders_ledger.c.debit - orders_ledger.c.credit).label("balance"),
            )
            .where(orders_ledger.c.source_id == order_id)
            .group_by(orders_ledger.c.account)
        )
    return {row.account: int(row.balance) for row in rows}


async def _books_are_clean(runtime) -> None:
    findings = await verify(runtime.db)
    assert [(f.check, f.offenders) for f in findings if not f.ok] == []


async def test_a_renewal_paid_in_part_with_credit_is_voided_and_the_credit_comes_back(
    api, runtime
) -> None:
    clock = await _post(api, "/v1/test-clocks", {"frozen_time": "2025-01-01T00:00:00Z"})
    customer = await _post(api, "/v1/customers", {"test_clock_id": clock["id"]})
    cards = f"/v1/customers/{customer['id']}/payment-methods"
    await _post(api, cards, {"card": GOOD_CARD})
    product = await _post(api, "/v1/products", {"name": "Pro"})
    plan = await _post(
        api,
        "/v1/plans",
        {"product_id": product["id"], "currency": "USD", "amount": 1000, "interval": "month"},
    )
    sub = await _post(
        api, "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"]}
    )
    await _post(api, cards, {"card": CHARGE_DECLINED_CARD, "set_default": True})
    await _post(api, f"/v1/customers/{customer['id']}/credits", {"amount": 300})

    # The renewal takes the 300 of credit; the card declines the 700 left: past due.
    await _post(
        api, f"/v1/test-clocks/{clock['id']}/advance", {"frozen_time": "2025-02-01T00:00:00Z"}
    )
    past_due = await _get(api, f"/v1/subscriptions/{sub['id']}")
    assert past_due["status"] == "past_due"
    renewal = await _get(api, f"/v1/orders/{past_due['latest_order_id']}")
    assert (renewal["status"], renewal["credit_applied"], renewal["amount_due"]) == (
        "open",
        300,
        700,
    )
    assert (await _get(api, f"/v1/customers/{customer['id']}"))["balance"] == 0

    voided = await _post(api, f"/v1/orders/{renewal['id']}/void")
    assert (voided["status"], voided["amount_due"]) == ("void", 0)
    assert (await _get(api, f"/v1/customers/{customer['id']}"))["balance"] == 300
    credits = (await _get(api, f"/v1/customers/{customer['id']}/credits"))["data"]
    newest = credits[0]
    assert (newest["type"], newest["amount"], newest["source_id"]) == (
        "unapplied_from_order",
        300,
        renewal["id"],
    )
    # Nothing is owed, nothing earned: every account of the order is back to 0.
    assert set((await _order_accounts(runtime, renewal["id"])).values()) == {0}

    # No retry charges a void order.
    await _post(
        api, f"/v1/test-clocks/{clock['id']}/advance", {"frozen_time": "2025-02-20T00:00:00Z"}
    )
    payments = (await _get(api, "/v1/payments", order_id=renewal["id"]))["data"]
    assert [p["status"] for p in payments] == ["failed"]
    await _books_are_clean(runtime)


async def test_credit_comes_back_once_however_often_the_void_is_told(api, tenant, runtime) -> None:
    customer = await _post(api, "/v1/customers", {"currency": "USD"})
    await _post(api, f"/v1/customers/{customer['id']}/credits", {"amount": 500})
    order = await _post(
        api,
        "/v1/orders",
        {"customer_id": customer["id"], "lines": [{"description": "a", "unit_amount": 1200}]},
    )
    assert (order["credit_applied"], order["amount_due"]) == (500, 700)
    voided = await _post(api, f"/v1/orders/{order['id']}/void")

    # The event again (a redelivery under another id), and the customers service asked again.
    again = Event(new_id("evt"), "orders", tenant.id, "order.voided", voided, runtime.clock.now())
    await runtime.bus.deliver([again])
    assert await runtime.customers.unapply_credit(tenant.id, customer["id"], order["id"]) == 500
    assert (await _get(api, f"/v1/customers/{customer['id']}"))["balance"] == 500
    credits = (await _get(api, f"/v1/customers/{customer['id']}/credits"))["data"]
    assert [c["amount"] for c in credits] == [500, -500, 500]
    await _books_are_clean(runtime)


async def test_a_voided_order_with_tax_gives_up_revenue_and_tax(api, runtime) -> None:
    tax = await _post(
        api, "/v1/tax-rates", {"percentage": 20, "inclusive": False, "display_name": "VAT"}
    )
    customer = await _post(api, "/v1/customers", {"currency": "USD", "tax_rate_ids": [tax["id"]]})
    order = await _post(
        api,
        "/v1/orders",
        {"customer_id": customer["id"], "lines": [{"description": "a", "unit_amount": 1000}]},
    )
    assert (order["total"], order["tax"], order["credit_applied"]) == (1200, 200, 0)
    assert await _order_accounts(runtime, order["id"]) == {
        "accounts_receivable": 1200,
        "revenue": -1000,
        "tax_payable": -200,
    }
    await _post(api, f"/v1/orders/{order['id']}/void")
    assert set((await _order_accounts(runtime, order["id"])).values()) == {0}
    # No credit was spent on it: none comes back.
    assert (await _get(api, f"/v1/customers/{customer['id']}/credits"))["data"] == []

    # A draft was never owed: its void writes nothing.
    draft = await _post(
        api,
        "/v1/orders",
        {
            "customer_id": customer["id"],
            "auto_finalize": False,
            "lines": [{"description": "b", "unit_amount": 1000}],
        },
    )
    await _post(api, f"/v1/orders/{draft['id']}/void")
    assert await _order_accounts(runtime, draft["id"]) == {}
    await _books_are_clean(runtime)


async def test_credit_spent_on_an_order_voided_meanwhile_comes_back(api, tenant, runtime) -> None:
    customer = await _post(api, "/v1/customers", {"currency": "USD"})
    order = await _post(
        api,
        "/v1/orders",
        {"customer_id": customer["id"], "lines": [{"description": "a", "unit_amount": 1200}]},
    )
    assert order["credit_applied"] == 0
    await _post(api, f"/v1/customers/{customer['id']}/credits", {"amount": 500})
    # Voided while a late step still holds the order as open, and spends credit on it after
    # the void was announced (when nothing was spent on it yet).
    await _post(api, f"/v1/orders/{order['id']}/void")
    assert (await _get(api, f"/v1/customers/{customer['id']}"))["balance"] == 500
    stale = Order.model_validate(order)
    after = await order_service.apply_customer_credit(runtime, tenant.id, stale)
    assert (after.status, after.credit_applied) == ("void", 0)
    assert (await _get(api, f"/v1/customers/{customer['id']}"))["balance"] == 500
    credits = (await _get(api, f"/v1/customers/{customer['id']}/credits"))["data"]
    assert [c["type"] for c in credits] == ["unapplied_from_order", "applied_to_order", "manual"]
    await _books_are_clean(runtime)
