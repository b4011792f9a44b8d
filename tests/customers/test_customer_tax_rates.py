"""A customer's tax rates: set on create and update, each one checked with the catalog."""

from __future__ import annotations

from typing import Any

import httpx


async def tax_rate(client: httpx.AsyncClient, percentage: int = 20) -> dict[str, Any]:
    response = await client.post(
        "/v1/tax-rates",
        json={"display_name": "VAT", "percentage": percentage, "inclusive": False},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def test_set_change_and_clear_tax_rates(api) -> None:
    vat, reduced = await tax_rate(api), await tax_rate(api, 5)
    response = await api.post(
        "/v1/customers", json={"tax_rate_ids": [vat["id"], reduced["id"], vat["id"]]}
    )
    assert response.status_code == 200, response.text
    customer = response.json()
    assert customer["tax_rate_ids"] == [vat["id"], reduced["id"]]  # each once
    plain = (await api.post("/v1/customers", json={})).json()
    assert plain["tax_rate_ids"] == []

    path = f"/v1/customers/{customer['id']}"
    changed = (await api.patch(path, json={"tax_rate_ids": [reduced["id"]]})).json()
    assert changed["tax_rate_ids"] == [reduced["id"]]
    assert (await api.patch(path, json={"name": "Ada"})).json()["tax_rate_ids"] == [reduced["id"]]
    assert (await api.patch(path, json={"tax_rate_ids": None})).json()["tax_rate_ids"] == []
    assert (await api.get(path)).json()["tax_rate_ids"] == []


async def test_unknown_or_another_tenants_tax_rates_are_404_and_change_nothing(
    api, other_tenant
) -> None:
    ours = await tax_rate(api)
    theirs = await tax_rate(other_tenant.client)
    for ids in (["txr_missing"], [ours["id"], theirs["id"]]):
        response = await api.post("/v1/customers", json={"tax_rate_ids": ids})
        assert response.status_code == 404, response.text
        assert response.json()["error"]["param"] == "tax_rate_ids"
    assert (await api.get("/v1/customers")).json()["data"] == []

    customer = (await api.post("/v1/customers", json={"tax_rate_ids": [ours["id"]]})).json()
    response = await api.patch(
        f"/v1/customers/{customer['id']}", json={"tax_rate_ids": [theirs["id"]], "name": "Ada"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "tax_rate_ids"
    unchanged = (await api.get(f"/v1/customers/{customer['id']}")).json()
    assert (unchanged["tax_rate_ids"], unchanged["name"]) == ([ours["id"]], None)


async def test_bad_tax_rate_ids_are_400(api) -> None:
    for ids, param in (
        ("txr_1", "tax_rate_ids"),
        ([1], "tax_rate_ids.0"),
        (["x"] * 11, "tax_rate_ids"),
    ):
        response = await api.post("/v1/customers", json={"tax_rate_ids": ids})
        assert response.status_code == 400, (ids, response.text)
        assert response.json()["error"]["param"] == param
