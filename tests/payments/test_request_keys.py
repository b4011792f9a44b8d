"""A request carried out again under its Idempotency-Key, after the process that ran it died
(the API gateway sends a keyed POST to another instance, whose idempotency layer finds the key
abandoned): it finishes what the first run started, and never charges a second time."""

from __future__ import annotations

import sqlalchemy as sa

from recur.payments import service as payments_service
from recur.payments.schemas import PaymentCreate
from recur.payments.tables import payments
from recur.subscriptions import service as subscriptions_service
from recur.subscriptions.schemas import SubscriptionCreate
from recur.subscriptions.tables import subscriptions
from recur.verify import verify


async def _count(runtime, table: sa.Table, **where: str) -> int:
    async with runtime.uow() as uow:
        query = sa.select(sa.func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        return int((await uow.execute(query)).scalar_one())


async def test_a_payment_request_run_again_settles_the_first_charge_and_makes_no_second(
    runtime, api, tenant, make_customer, attach
) -> None:
    # The first run's charge times out at the gateway, which charged the card all the same.
    configured = await api.post(
        "/v1/gateways",
        json={
            "name": "sandbox",
            "credentials": {"faults": {"timeout_share": 1.0, "charged_on_timeout_share": 1.0}},
        },
    )
    assert configured.status_code == 200, configured.text
    customer = await make_customer()
    assert (await attach(customer["id"])).status_code == 200
    params = PaymentCreate(customer_id=customer["id"], amount=1200, currency="USD")
    first = await payments_service.create_payment(runtime, tenant.id, params, request_key="k-1")
    assert first.status == "pending"

    # Its process died before answering; the same request, run again, asks the gateway what
    # became of the first charge instead of making another.
    again = await payments_service.create_payment(runtime, tenant.id, params, request_key="k-1")
    assert (again.id, again.status) == (first.id, "succeeded")
    assert await _count(runtime, payments, customer_id=customer["id"]) == 1
    fetched = (await api.get(f"/v1/payments/{first.id}")).json()
    assert [a["number"] for a in fetched["attempts"]] == [1]

    # Another key is another payment.
    other = await payments_service.create_payment(runtime, tenant.id, params, request_key="k-2")
    assert other.id != first.id
    assert all(f.ok for f in await verify(runtime.db))


async def test_a_subscription_request_run_again_finishes_the_first_subscription(
    runtime, api, tenant, make_customer, attach
) -> None:
    customer = await make_customer()
    assert (await attach(customer["id"])).status_code == 200
    product = (await api.post("/v1/products", json={"name": "Pro"})).json()
    body = {"product_id": product["id"], "currency": "USD", "amount": 900, "interval": "month"}
    plan = (await api.post("/v1/plans", json=body)).json()
    params = SubscriptionCreate(customer_id=customer["id"], plan_id=plan["id"])

    first = await subscriptions_service.create_subscription(
        runtime, tenant.id, params, request_key="s-1"
    )
    again = await subscriptions_service.create_subscription(
        runtime, tenant.id, params, request_key="s-1"
    )
    assert (again.id, again.status) == (first.id, "active")
    assert await _count(runtime, subscriptions, customer_id=customer["id"]) == 1
    assert await _count(runtime, payments, customer_id=customer["id"]) == 1

    # Through the API the key reaches the service too: a second key, a second subscription.
    created = await api.post(
        "/v1/subscriptions",
        json={"customer_id": customer["id"], "plan_id": plan["id"]},
        headers={"Idempotency-Key": "s-2"},
    )
    assert created.status_code == 200, created.text
    async with runtime.uow() as uow:
        keys = set(
            (
                await uow.execute(
                    sa.select(subscriptions.c.request_key).where(
                        subscriptions.c.customer_id == customer["id"]
                    )
                )
            ).scalars()
        )
    assert keys == {"s-1", "s-2"}
