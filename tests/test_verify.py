"""`recur verify` passes on honest books and names the ids of anything tampered with."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from typer.testing import CliRunner

from recur.cli import app as cli
from recur.customers.tables import customers
from recur.customers.tables import ledger as customers_ledger
from recur.kit.db import Database
from recur.orders.tables import orders
from recur.payments.tables import payments

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2099}


async def _books(api) -> dict:
    """A customer with a paid subscription, a paid one-off order and a credit."""
    customer = (await api.post("/v1/customers", json={"currency": "USD"})).json()
    await api.post(f"/v1/customers/{customer['id']}/payment-methods", json={"card": CARD})
    product = (await api.post("/v1/products", json={"name": "Pro"})).json()
    plan = (
        await api.post(
            "/v1/plans",
            json={
                "product_id": product["id"],
                "currency": "USD",
                "amount": 800,
                "interval": "month",
            },
        )
    ).json()
    sub = (
        await api.post(
            "/v1/subscriptions", json={"customer_id": customer["id"], "plan_id": plan["id"]}
        )
    ).json()
    order = (
        await api.post(
            "/v1/orders",
            json={
                "customer_id": customer["id"],
                "lines": [{"description": "x", "unit_amount": 300}],
            },
        )
    ).json()
    await api.post("/v1/payments", json={"order_id": order["id"]})
    await api.post(f"/v1/customers/{customer['id']}/credits", json={"amount": 250})
    return {"customer": customer, "subscription": sub, "order": order}


def _verify(database_url: str, monkeypatch) -> tuple[int, str]:
    monkeypatch.setenv("RECUR_DATABASE_URL", database_url)
    result = CliRunner().invoke(cli, ["verify"])
    return result.exit_code, result.output


async def test_verify_is_clean_on_honest_books(api, settings, monkeypatch) -> None:
    await _books(api)
    code, output = await asyncio.to_thread(_verify, settings.database_url, monkeypatch)
    assert code == 0, output
    assert output.count("ok ") == 8


async def test_verify_names_what_was_tampered_with(api, runtime, settings, monkeypatch) -> None:
    books = await _books(api)
    unpaid = (
        await api.post(
            "/v1/orders",
            json={
                "customer_id": books["customer"]["id"],
                "lines": [{"description": "y", "unit_amount": 999}],
            },
        )
    ).json()
    db = Database(settings.database_url)
    async with db.engine.begin() as conn:
        # An order marked paid that no payment covers; a balance the ledger does not hold;
        # a ledger line with no counterpart.
        await conn.execute(
            sa.update(orders).where(orders.c.id == unpaid["id"]).values(status="paid")
        )
        await conn.execute(
            sa.update(customers)
            .where(customers.c.id == books["customer"]["id"])
            .values(balance=customers.c.balance + 1)
        )
        await conn.execute(
            sa.insert(customers_ledger).values(
                id="led_forged",
                tenant_id="t",
                transaction_id="ltx_forged",
                kind="forged",
                source_id="x",
                customer_id=None,
                account="cash",
                debit=5,
                credit=0,
                currency="USD",
                created=runtime.clock.now(),
            )
        )
    await db.dispose()
    code, output = await asyncio.to_thread(_verify, settings.database_url, monkeypatch)
    assert code == 1
    assert unpaid["id"] in output
    assert books["customer"]["id"] in output
    assert "ltx_forged" in output
    assert "ok      no subscription period was ordered twice" in output


async def test_the_ledgers_follow_the_money(api, runtime) -> None:
    from recur.orders.tables import ledger as orders_ledger
    from recur.payments.tables import ledger as payments_ledger

    books = await _books(api)
    payment = (
        await api.post(
            "/v1/payments",
            json={"customer_id": books["customer"]["id"], "amount": 1000, "currency": "USD"},
        )
    ).json()
    await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 400})
    open_order = (
        await api.post(
            "/v1/orders",
            json={
                "customer_id": books["customer"]["id"],
                "auto_finalize": True,
                "lines": [{"description": "z", "unit_amount": 700}],
            },
        )
    ).json()

    async def balance(table, account: str) -> int:
        async with runtime.uow() as uow:
            row = await uow.fetch_one(
                sa.select(sa.func.coalesce(sa.func.sum(table.c.debit - table.c.credit), 0)).where(
                    table.c.account == account
                )
            )
        return int(row[0])

    # Receivable: what is still owed. The subscription (800) and the first order (300) are
    # paid; the last order was paid from the 250 credit, leaving 450 owed.
    assert open_order["credit_applied"] == 250
    assert await balance(orders_ledger, "accounts_receivable") == 450
    assert await balance(orders_ledger, "revenue") == -(800 + 300 + 700)
    # Cash at the gateway: 800 + 300 + 1000 taken in, 400 refunded.
    assert await balance(payments_ledger, "gateway_cash:sandbox") == 800 + 300 + 1000 - 400


def _offenders(output: str, check: str) -> str:
    """What a failed check names (the console may wrap it over several lines)."""
    text = " ".join(output.split())
    named = text.split(f"FAILED {check}: ", 1)[1]
    return named.split(" FAILED ", 1)[0].split(" ok ", 1)[0]


async def _every_kind_of_movement(api, books: dict) -> dict:
    """Beyond `_books`: a refund, an open order, a voided order credit was applied to, and a
    written-off order, one of them paid later."""
    customer_id = books["customer"]["id"]

    async def order(amount: int) -> dict:
        body = {"customer_id": customer_id, "lines": [{"description": "o", "unit_amount": amount}]}
        return (await api.post("/v1/orders", json=body)).json()

    payment = (
        await api.post(
            "/v1/payments", json={"customer_id": customer_id, "amount": 1000, "currency": "USD"}
        )
    ).json()
    await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 400})
    voided = await order(600)  # takes the 250 of credit
    assert voided["credit_applied"] == 250
    await api.post(f"/v1/orders/{voided['id']}/void")
    open_order = await order(700)  # takes the 250 given back
    recovered = await order(900)
    await api.post(f"/v1/orders/{recovered['id']}/mark-uncollectible")
    response = await api.post("/v1/payments", json={"order_id": recovered["id"]})
    assert response.json()["status"] == "succeeded", response.text
    written_off = await order(500)
    await api.post(f"/v1/orders/{written_off['id']}/mark-uncollectible")
    return {"open": open_order, "written_off": written_off, "payment": payment}


async def test_verify_is_clean_after_every_kind_of_movement(api, settings, monkeypatch) -> None:
    books = await _books(api)
    await _every_kind_of_movement(api, books)
    code, output = await asyncio.to_thread(_verify, settings.database_url, monkeypatch)
    assert code == 0, output


async def test_verify_names_orders_whose_receivable_is_off(api, settings, monkeypatch) -> None:
    books = await _books(api)
    more = await _every_kind_of_movement(api, books)
    db = Database(settings.database_url)
    async with db.engine.begin() as conn:
        # Owing less than the ledger says; written off for more than the ledger holds.
        for order_id in (more["open"]["id"], more["written_off"]["id"]):
            await conn.execute(
                sa.update(orders)
                .where(orders.c.id == order_id)
                .values(amount_paid=orders.c.amount_paid + 1)
            )
    await db.dispose()
    code, output = await asyncio.to_thread(_verify, settings.database_url, monkeypatch)
    assert code == 1
    failed = _offenders(output, "every order's receivable equals what it owes")
    assert more["open"]["id"] in failed and more["written_off"]["id"] in failed
    assert books["order"]["id"] not in failed


async def test_verify_names_gateway_cash_that_payments_do_not_explain(
    api, tenant, settings, monkeypatch
) -> None:
    books = await _books(api)
    more = await _every_kind_of_movement(api, books)
    db = Database(settings.database_url)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.update(payments)
            .where(payments.c.id == more["payment"]["id"])
            .values(amount=payments.c.amount + 1)
        )
    await db.dispose()
    code, output = await asyncio.to_thread(_verify, settings.database_url, monkeypatch)
    assert code == 1
    failed = _offenders(output, "gateway cash equals payments less refunds")
    assert failed == f"{tenant.id}/gateway_cash:sandbox/USD"
    assert "ok      every succeeded payment is applied to its order" in output


async def test_verify_names_orders_a_payment_was_not_applied_to(api, settings, monkeypatch) -> None:
    books = await _books(api)
    more = await _every_kind_of_movement(api, books)
    # The payment of the paid one-off order now names the open order: the first was applied a
    # payment it no longer has, the second has a payment never applied to it.
    db = Database(settings.database_url)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.update(payments)
            .where(payments.c.order_id == books["order"]["id"])
            .values(order_id=more["open"]["id"])
        )
    await db.dispose()
    code, output = await asyncio.to_thread(_verify, settings.database_url, monkeypatch)
    assert code == 1
    failed = _offenders(output, "every succeeded payment is applied to its order")
    assert books["order"]["id"] in failed and more["open"]["id"] in failed
    assert "ok      gateway cash equals payments less refunds" in output
