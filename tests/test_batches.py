"""The batch forms the bill run uses: event delivery, payments applied to orders, credit spent."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from recur.customers.schemas import CreditRequest
from recur.customers.service import OUTBOX as CUSTOMERS_OUTBOX
from recur.customers.tables import inbox as customers_inbox
from recur.customers.tables import outbox as customers_outbox
from recur.kit.db import UnitOfWork
from recur.kit.events import Event
from recur.payments.tables import OUTBOX as PAYMENTS_OUTBOX
from recur.verify import verify


async def test_one_bad_event_in_a_batch_holds_back_no_other(runtime, tenant):
    applied: list[str] = []
    broken = {"yes"}

    async def one(uow: UnitOfWork, event: Event) -> None:
        if event.payload["broken"] in broken:
            raise RuntimeError("cannot apply this one")
        name = event.payload["n"]

        async def done() -> None:  # what a handler does counts only if its transaction commits
            applied.append(name)

        uow.after_commit(done)

    async def many(uow: UnitOfWork, events: list[Event]) -> None:
        for event in events:
            await one(uow, event)

    runtime.bus.subscribe("test.thing", "customers", customers_inbox, one, batch_handler=many)
    async with runtime.uow() as uow:
        await CUSTOMERS_OUTBOX.record_many(
            uow,
            [
                (tenant.id, "test.thing", {"n": "a", "broken": "no"}),
                (tenant.id, "test.thing", {"n": "b", "broken": "yes"}),
                (tenant.id, "test.thing", {"n": "c", "broken": "no"}),
            ],
            runtime.clock.now(),
        )
        await uow.commit()  # delivered here: the batch fails, then one at a time
    assert applied == ["a", "c"]
    async with runtime.uow() as uow:
        undelivered = await uow.fetch_all(
            sa.select(customers_outbox.c.payload).where(
                customers_outbox.c.type == "test.thing", customers_outbox.c.delivered_at.is_(None)
            )
        )
    assert [row.payload["n"] for row in undelivered] == ["b"]

    broken.clear()  # fixed: the sweeper delivers it, and nothing twice
    await runtime.bus.redeliver_pending(older_than=timedelta(0))
    await runtime.bus.redeliver_pending(older_than=timedelta(0))
    assert applied == ["a", "c", "b"]


async def test_payments_applied_in_a_batch_count_once_each(runtime, tenant, api):
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    orders = []
    for amount in (400, 500, 600):
        response = await api.post(
            "/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "x", "unit_amount": amount}],
            },
        )
        orders.append(response.json())
    first, second, third = orders

    def payment(payment_id: str, order: dict, amount: int) -> dict:
        return {
            "id": payment_id,
            "customer_id": customer["id"],
            "order_id": order["id"],
            "amount": amount,
            "currency": "USD",
            "status": "succeeded",
            "failure_code": None,
            "failure_message": None,
            "amount_refunded": 0,
            "refunded": False,
            "payment_method_id": None,
            "gateway": "sandbox",
            "gateway_reference": f"ch_{payment_id}",
            "description": None,
            "created": runtime.clock.now().isoformat(),
        }

    # Paid in full; paid in two parts; paid in full twice (the second is an overpayment, kept
    # out of the order). In one batch, as the bill run's charges arrive.
    async with runtime.uow() as uow:
        await PAYMENTS_OUTBOX.record_many(
            uow,
            [
                (tenant.id, "payment.succeeded", payment("pay_a", first, 400)),
                (tenant.id, "payment.succeeded", payment("pay_b1", second, 200)),
                (tenant.id, "payment.succeeded", payment("pay_b2", second, 300)),
                (tenant.id, "payment.succeeded", payment("pay_c1", third, 600)),
                (tenant.id, "payment.succeeded", payment("pay_c2", third, 600)),
            ],
            runtime.clock.now(),
        )
        await uow.commit()
    seen = [(await api.get(f"/v1/orders/{o['id']}")).json() for o in orders]
    assert [(o["status"], o["amount_paid"]) for o in seen] == [
        ("paid", 400),
        ("paid", 500),
        ("paid", 600),
    ]
    # The orders ledger moved exactly what was applied: receivables are settled, no more.
    findings = await verify(runtime.db)
    receivables = next(f for f in findings if "receivable" in f.check)
    assert receivables.offenders == []


async def test_credit_spent_in_a_batch_is_split_across_one_customers_orders(runtime, tenant, api):
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    other = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    response = await api.post(
        f"/v1/customers/{customer['id']}/credits", json={"amount": 700, "currency": "USD"}
    )
    assert response.status_code == 200, response.text
    requests = [
        CreditRequest(customer["id"], "ord_x1", "USD", 500),
        CreditRequest(other["id"], "ord_y", "USD", 500),  # no credit: left out
        CreditRequest(customer["id"], "ord_x2", "USD", 500),
        CreditRequest(customer["id"], "ord_x3", "EUR", 500),  # another currency: nothing
    ]
    applied = await runtime.customers.apply_credits(tenant.id, requests)
    assert applied == {"ord_x1": 500, "ord_x2": 200}
    # Asked again (a rerun after a crash), the same answer and nothing more spent.
    assert await runtime.customers.apply_credits(tenant.id, requests) == applied
    fresh = (await api.get(f"/v1/customers/{customer['id']}")).json()
    assert fresh["balance"] == 0
    findings = await verify(runtime.db)
    balances = next(f for f in findings if "balance" in f.check)
    assert balances.offenders == []
