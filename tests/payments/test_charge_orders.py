"""Charging orders in a batch (the bill run's call): one answer per order, never two charges."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from recur.payments.tables import payments


async def test_every_kind_of_order_in_one_batch(
    api, tenant, runtime, make_customer, attach, make_order
):
    good, declining, cardless = [await make_customer() for _ in range(3)]
    assert (await attach(good["id"])).status_code == 200
    assert (await attach(declining["id"], number="4000000000000341")).status_code == 200
    to_charge = await make_order(good["id"], 1000)
    to_decline = await make_order(declining["id"], 2000)
    no_card = await make_order(cardless["id"], 3000)
    paid = await make_order(good["id"], 400)
    assert (await api.post("/v1/payments", json={"order_id": paid["id"]})).status_code == 200
    voided = await make_order(good["id"], 500)
    assert (await api.post(f"/v1/orders/{voided['id']}/void")).status_code == 200
    ids = [to_charge["id"], to_decline["id"], no_card["id"], paid["id"], voided["id"], "ord_nope"]

    answers = await runtime.payments.charge_orders(tenant.id, ids)
    assert [(a.order_id, a.outcome) for a in answers] == list(
        zip(
            ids,
            ["succeeded", "failed", "no_payment_method", "paid", "not_payable", "not_payable"],
            strict=True,
        )
    )
    assert answers[0].payment.amount == 1000 and answers[0].payment.status == "succeeded"
    assert answers[1].payment.failure_code == "card_declined"
    charged = (await api.get(f"/v1/orders/{to_charge['id']}")).json()
    assert (charged["status"], charged["amount_paid"]) == ("paid", 1000)

    # Again: the paid one is paid, the declined one is tried again (a new payment record).
    again = await runtime.payments.charge_orders(tenant.id, ids[:2])
    assert [a.outcome for a in again] == ["paid", "failed"]
    listed = (await api.get("/v1/payments", params={"order_id": to_charge["id"]})).json()["data"]
    assert [p["status"] for p in listed] == ["succeeded"]


async def test_an_order_being_paid_is_left_to_that_payment(
    tenant, runtime, make_customer, attach, make_order
):
    customer = await make_customer()
    assert (await attach(customer["id"])).status_code == 200
    order = await make_order(customer["id"], 700)
    # Two batches charging the same order at once: one payment, the other batch is told so.
    first, second = await asyncio.gather(
        runtime.payments.charge_orders(tenant.id, [order["id"]]),
        runtime.payments.charge_orders(tenant.id, [order["id"]]),
    )
    outcomes = sorted([first[0].outcome, second[0].outcome])
    assert outcomes in (["in_progress", "succeeded"], ["paid", "succeeded"])
    async with runtime.uow() as uow:
        count = (
            await uow.execute(
                sa.select(sa.func.count()).where(
                    payments.c.order_id == order["id"], payments.c.status == "succeeded"
                )
            )
        ).scalar_one()
    assert count == 1


async def test_a_batch_writes_each_wave_of_attempts_just_before_sending_it(
    tenant, runtime, make_customer, attach, make_order, monkeypatch
) -> None:
    from recur.payments import attempts

    # Attempts written long before they are sent would look stranded to the reconciler, which
    # would charge them again under the next key: each wave is written, then sent.
    monkeypatch.setattr(attempts, "GATEWAY_CONCURRENCY", 2)
    written: list[int] = []
    write = attempts._write_attempts

    async def observed(rt, tenant_id, rows, payment_ids, now):  # type: ignore[no-untyped-def]
        written.append(len(rows))
        return await write(rt, tenant_id, rows, payment_ids, now)

    monkeypatch.setattr(attempts, "_write_attempts", observed)
    orders = []
    for _ in range(5):
        customer = await make_customer()
        assert (await attach(customer["id"])).status_code == 200
        orders.append((await make_order(customer["id"], 700))["id"])
    answers = await runtime.payments.charge_orders(tenant.id, orders)
    assert [a.outcome for a in answers] == ["succeeded"] * 5
    assert written == [2, 2, 1]
