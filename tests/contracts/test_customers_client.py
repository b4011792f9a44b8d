"""CustomersClient: the same answers and errors in-process and over HTTP."""

from __future__ import annotations

from recur.customers.schemas import CreditRequest
from recur.kit.errors import InvalidRequest, NotFound

from .conftest import same_error


async def test_get_and_get_many(clients, runtime, tenant, other_tenant, make_customer) -> None:
    ada = await make_customer(name="Ada", address={"city": "London", "country": "GB"})
    bob = await make_customer(name="Bob", metadata={"tier": "gold"})
    theirs = await make_customer(client=other_tenant.client, name="Other")

    got = await clients.customers.get(tenant.id, ada["id"])
    assert got == await runtime.customers.get(tenant.id, ada["id"])
    assert got.model_dump(mode="json") == ada

    many = await clients.customers.get_many(tenant.id, [ada["id"], bob["id"], "cus_nope"])
    assert set(many) == {ada["id"], bob["id"]}
    assert many[bob["id"]].metadata == {"tier": "gold"}
    # Another tenant's customer is not this tenant's: left out, and not found.
    assert await clients.customers.get_many(tenant.id, [theirs["id"]]) == {}
    assert await clients.customers.get_many(tenant.id, []) == {}
    error = await same_error(
        runtime.customers.get(tenant.id, theirs["id"]),
        clients.customers.get(tenant.id, theirs["id"]),
        code="resource_missing",
    )
    assert isinstance(error, NotFound)
    assert error.param == "customer_id"


async def test_get_by_number(clients, runtime, tenant, make_customer) -> None:
    ada = await make_customer(name="Ada")
    got = await clients.customers.get_by_number(tenant.id, ada["number"])
    assert got.id == ada["id"]
    await same_error(
        runtime.customers.get_by_number(tenant.id, 999_999),
        clients.customers.get_by_number(tenant.id, 999_999),
        code="resource_missing",
    )


async def test_adopt_currency(clients, runtime, tenant, make_customer) -> None:
    customer = await make_customer(currency=None)
    adopted = await clients.customers.adopt_currency(tenant.id, customer["id"], "EUR")
    assert adopted.currency == "EUR"
    # Adopting the same currency again changes nothing; another one is refused.
    assert (await clients.customers.adopt_currency(tenant.id, customer["id"], "EUR")) == adopted
    error = await same_error(
        runtime.customers.adopt_currency(tenant.id, customer["id"], "USD"),
        clients.customers.adopt_currency(tenant.id, customer["id"], "USD"),
    )
    assert isinstance(error, InvalidRequest)


async def test_default_payment_method(clients, runtime, tenant, make_customer, attach_card) -> None:
    customer = await make_customer()
    first = await attach_card(customer["id"])
    second = await attach_card(customer["id"], "5555555555554444")

    kept = await clients.customers.set_default_payment_method_if_unset(
        tenant.id, customer["id"], second["id"]
    )
    assert kept.default_payment_method_id == first["id"]
    changed = await clients.customers.set_default_payment_method(
        tenant.id, customer["id"], second["id"]
    )
    assert changed.default_payment_method_id == second["id"]
    await same_error(
        runtime.customers.set_default_payment_method(tenant.id, customer["id"], "pm_nope"),
        clients.customers.set_default_payment_method(tenant.id, customer["id"], "pm_nope"),
    )
    await same_error(
        runtime.customers.set_default_payment_method_if_unset(tenant.id, "cus_nope", first["id"]),
        clients.customers.set_default_payment_method_if_unset(tenant.id, "cus_nope", first["id"]),
        code="resource_missing",
    )


async def test_credit_grant_apply_unapply(clients, runtime, tenant, make_customer) -> None:
    customer = await make_customer()
    granted = await clients.customers.grant_credit(
        tenant.id,
        customer["id"],
        1500,
        "USD",
        type_="manual",
        source_id="cred_contract_1",
        description="goodwill",
    )
    assert (granted.amount, granted.ending_balance, granted.type) == (1500, 1500, "manual")
    # Granting again from the same source grants once.
    again = await clients.customers.grant_credit(
        tenant.id, customer["id"], 1500, "USD", type_="manual", source_id="cred_contract_1"
    )
    assert again == granted

    assert (
        await clients.customers.apply_credit(tenant.id, customer["id"], "ord_a", "USD", 400) == 400
    )
    # Once per order.
    assert (
        await clients.customers.apply_credit(tenant.id, customer["id"], "ord_a", "USD", 400) == 400
    )
    assert (await clients.customers.get(tenant.id, customer["id"])).balance == 1100
    assert await clients.customers.unapply_credit(tenant.id, customer["id"], "ord_a") == 400
    # Once per order: asking again answers the same and gives nothing back twice.
    assert await clients.customers.unapply_credit(tenant.id, customer["id"], "ord_a") == 400
    assert (await clients.customers.get(tenant.id, customer["id"])).balance == 1500

    error = await same_error(
        runtime.customers.grant_credit(
            tenant.id, customer["id"], 100, "EUR", type_="manual", source_id="cred_contract_2"
        ),
        clients.customers.grant_credit(
            tenant.id, customer["id"], 100, "EUR", type_="manual", source_id="cred_contract_2"
        ),
    )
    assert isinstance(error, InvalidRequest)
    await same_error(
        runtime.customers.grant_credit(
            tenant.id, customer["id"], 100, "XYZ", type_="manual", source_id="cred_contract_3"
        ),
        clients.customers.grant_credit(
            tenant.id, customer["id"], 100, "XYZ", type_="manual", source_id="cred_contract_3"
        ),
    )


async def test_apply_credits_in_one_batch(clients, tenant, make_customer) -> None:
    rich = await make_customer()
    poor = await make_customer()
    await clients.customers.grant_credit(
        tenant.id, rich["id"], 1000, "USD", type_="manual", source_id="cred_batch"
    )
    applied = await clients.customers.apply_credits(
        tenant.id,
        [
            CreditRequest(rich["id"], "ord_1", "USD", 600),
            CreditRequest(rich["id"], "ord_2", "USD", 600),
            CreditRequest(poor["id"], "ord_3", "USD", 600),
        ],
    )
    assert applied.get("ord_1") == 600
    assert applied.get("ord_2") == 400
    assert applied.get("ord_3", 0) == 0
    assert await clients.customers.apply_credits(tenant.id, []) == {}
    assert (await clients.customers.get(tenant.id, rich["id"])).balance == 0
