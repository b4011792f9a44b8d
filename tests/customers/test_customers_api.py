"""Customers through the public API."""

from __future__ import annotations


async def test_create_get_update_customer(api) -> None:
    created = await api.post(
        "/v1/customers",
        json={
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "address": {"line1": "12 St James's Square", "city": "London", "country": "GB"},
            "metadata": {"crm": "42"},
        },
    )
    assert created.status_code == 200, created.text
    customer = created.json()
    assert customer["id"].startswith("cus_")
    assert customer["number"] == 1
    assert customer["currency"] is None
    assert customer["address"]["city"] == "London"

    fetched = (await api.get(f"/v1/customers/{customer['id']}")).json()
    assert fetched == customer

    updated = await api.patch(f"/v1/customers/{customer['id']}", json={"name": "Ada King"})
    assert updated.status_code == 200
    assert updated.json()["name"] == "Ada King"
    assert updated.json()["email"] == "ada@example.com"


async def test_numbers_are_per_tenant_and_increasing(api, other_tenant) -> None:
    numbers = [(await api.post("/v1/customers", json={})).json()["number"] for _ in range(3)]
    assert numbers == [1, 2, 3]
    theirs = (await other_tenant.client.post("/v1/customers", json={})).json()
    assert theirs["number"] == 1


async def test_list_paginates_newest_first(api) -> None:
    ids = [(await api.post("/v1/customers", json={"name": f"c{i}"})).json()["id"] for i in range(5)]
    first = (await api.get("/v1/customers", params={"limit": 2})).json()
    assert [c["id"] for c in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    second = (
        await api.get(
            "/v1/customers", params={"limit": 2, "starting_after": first["data"][-1]["id"]}
        )
    ).json()
    assert [c["id"] for c in second["data"]] == ids[::-1][2:4]
    last = (
        await api.get(
            "/v1/customers", params={"limit": 2, "starting_after": second["data"][-1]["id"]}
        )
    ).json()
    assert [c["id"] for c in last["data"]] == ids[:1]
    assert last["has_more"] is False


async def test_another_tenants_customer_is_not_found(api, other_tenant) -> None:
    mine = (await api.post("/v1/customers", json={"name": "Ada"})).json()
    client = other_tenant.client
    assert (await client.get(f"/v1/customers/{mine['id']}")).status_code == 404
    patched = await client.patch(f"/v1/customers/{mine['id']}", json={"name": "Mallory"})
    assert patched.status_code == 404
    assert (await client.get(f"/v1/customers/{mine['id']}/billing-history")).status_code == 404
    assert (await client.get("/v1/customers")).json()["data"] == []
    assert (await api.get(f"/v1/customers/{mine['id']}")).json()["name"] == "Ada"


async def test_bad_input_is_a_4xx_and_changes_nothing(api) -> None:
    cases = [
        {"email": "not-an-email"},
        {"currency": "ZZZ"},
        {"currency": 12},
        {"name": ["list"]},
        {"address": {"country": "Great Britain"}},
        {"metadata": {"k": {"nested": 1}}},
        {"test_clock_id": "clock_missing"},
    ]
    for body in cases:
        response = await api.post("/v1/customers", json=body)
        assert 400 <= response.status_code < 500, (body, response.text)
        error = response.json()["error"]
        assert error["type"] and error["code"] and error["message"], body
        assert error["param"], body
    not_json = await api.post(
        "/v1/customers", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert not_json.status_code == 400
    assert (await api.get("/v1/customers")).json()["data"] == []
    assert (await api.get("/v1/customers", params={"limit": 0})).status_code == 400
    assert (await api.get("/v1/customers", params={"limit": 101})).status_code == 400
    assert (await api.get("/v1/customers/cus_missing")).status_code == 404


async def test_currency_is_normalized(api) -> None:
    customer = (await api.post("/v1/customers", json={"currency": "eur"})).json()
    assert customer["currency"] == "EUR"


async def test_nul_characters_are_refused_not_a_500(api) -> None:
    for path in ("/v1/customers/cus_%00", "/v1/customers?starting_after=%00", "/v1/orders/ord_%00"):
        response = await api.get(path)
        assert response.status_code == 400, path
        assert response.json()["error"]["code"] == "parameter_invalid"
    stored = await api.post("/v1/customers", json={"name": "Ada\u0000Lovelace"})
    assert 400 <= stored.status_code < 500
    assert (await api.get("/v1/customers")).json()["data"] == []


async def test_detaching_the_default_card_clears_it(api) -> None:
    customer = (await api.post("/v1/customers", json={})).json()
    card = {"number": "4242424242424242", "exp_month": 1, "exp_year": 2099}
    method = (
        await api.post(f"/v1/customers/{customer['id']}/payment-methods", json={"card": card})
    ).json()
    detached = await api.delete(f"/v1/customers/{customer['id']}/payment-methods/{method['id']}")
    assert detached.status_code == 200
    fetched = (await api.get(f"/v1/customers/{customer['id']}")).json()
    assert fetched["default_payment_method_id"] is None
