"""The tenant's dunning settings: the retry schedule of failed renewal charges."""

from __future__ import annotations

from typing import Any

import pytest

DEFAULTS = {"object": "dunning_settings", "retry_days": [1, 3, 5, 7], "final_action": "cancel"}


async def test_defaults_until_set(api) -> None:
    response = await api.get("/v1/dunning-settings")
    assert response.status_code == 200
    assert response.json() == DEFAULTS


async def test_set_and_read_back(api) -> None:
    response = await api.post(
        "/v1/dunning-settings", json={"retry_days": [2, 4, 9], "final_action": "unpaid"}
    )
    assert response.status_code == 200
    expected = {**DEFAULTS, "retry_days": [2, 4, 9], "final_action": "unpaid"}
    assert response.json() == expected
    assert (await api.get("/v1/dunning-settings")).json() == expected


async def test_an_omitted_field_keeps_its_value(api) -> None:
    await api.post("/v1/dunning-settings", json={"final_action": "unpaid"})
    response = await api.post("/v1/dunning-settings", json={"retry_days": [1]})
    assert response.json() == {**DEFAULTS, "retry_days": [1], "final_action": "unpaid"}
    response = await api.post("/v1/dunning-settings", json={})
    assert response.json() == {**DEFAULTS, "retry_days": [1], "final_action": "unpaid"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"retry_days": []}, "retry_days"),
        ({"retry_days": [0]}, "retry_days.0"),
        ({"retry_days": [-1, 2]}, "retry_days.0"),
        ({"retry_days": [3, 1]}, "retry_days"),
        ({"retry_days": [1, 1]}, "retry_days"),
        ({"retry_days": list(range(1, 12))}, "retry_days"),
        ({"retry_days": [1, "3"]}, "retry_days.1"),
        ({"retry_days": [1.5]}, "retry_days.0"),
        ({"retry_days": [True]}, "retry_days.0"),
        ({"retry_days": [366]}, "retry_days.0"),
        ({"retry_days": [10**30]}, "retry_days.0"),
        ({"retry_days": 3}, "retry_days"),
        ({"retry_days": None}, None),
        ({"final_action": "delete"}, "final_action"),
        ({"final_action": None}, None),
    ],
)
async def test_bad_input_is_400_naming_the_field(api, body: dict[str, Any], param) -> None:
    response = await api.post("/v1/dunning-settings", json=body)
    if param is None:  # an explicit null keeps the value, like an omitted field
        assert response.status_code == 200
        assert response.json() == DEFAULTS
        return
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert (await api.get("/v1/dunning-settings")).json() == DEFAULTS


async def test_each_tenant_has_its_own(api, other_tenant) -> None:
    await api.post("/v1/dunning-settings", json={"retry_days": [5], "final_action": "unpaid"})
    assert (await other_tenant.client.get("/v1/dunning-settings")).json() == DEFAULTS
    await other_tenant.client.post("/v1/dunning-settings", json={"retry_days": [2, 3]})
    mine = (await api.get("/v1/dunning-settings")).json()
    assert (mine["retry_days"], mine["final_action"]) == ([5], "unpaid")
    theirs = (await other_tenant.client.get("/v1/dunning-settings")).json()
    assert (theirs["retry_days"], theirs["final_action"]) == ([2, 3], "cancel")
