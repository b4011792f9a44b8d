"""A tenant's payment gateways and routing rules through the API: credentials checked, kept
encrypted, never returned or logged; every bad input a 4xx that changes nothing; tenants apart."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from recur.app import create_app
from recur.gateway.keys import create_key
from recur.gateway_app import route_templates
from recur.payments.tables import payment_gateways
from recur.runtime import Runtime, build_runtime
from recur.schema import all_tables
from recur.service_app import create_service_app
from recur.settings import Settings

KEY = Fernet.generate_key().decode()

STRIPE = {
    "api_key": "sk_test_51Hx9SeCrEtStRiPeKeY4242",
    "webhook_secret": "whsec_sEcReTwEbHoOk9876",
}
ADYEN = {
    "api_key": "AQEyhmfxK4PKaBVHw0m/n3Q5qf3VaY9UCJ1+XWZe9W27jmlZiv4PD4jhfNMofnLr2K5i8/0QwV1bDb7k"
    "fNy1WIxIIkxgBw==-aDyEnKeY7777",
    "merchant_account": "AcmeECOM",
    "hmac_key": "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056",
}
SECRETS = [STRIPE["api_key"], STRIPE["webhook_secret"], ADYEN["api_key"], ADYEN["hmac_key"]]


def stripe(**changes: Any) -> dict[str, Any]:
    """A body configuring stripe, with these credentials changed."""
    return {"name": "stripe", "credentials": {**STRIPE, **changes}}


def adyen(**changes: Any) -> dict[str, Any]:
    return {"name": "adyen", "credentials": {**ADYEN, **changes}}


def shares(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"gateway": gateway, "percent": percent} for gateway, percent in pairs]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        gateway_credentials_key=KEY,
    )


def _secret_parts(secret: str) -> list[str]:
    # The secret, and any 8 characters of it: more than the summary's last 4 ever shows.
    return [secret] + [secret[i : i + 8] for i in range(0, len(secret) - 8, 4)]


async def _rows(runtime: Runtime) -> list[Any]:
    async with runtime.uow() as uow:
        return list(await uow.fetch_all(sa.select(payment_gateways)))


async def _dump_all(runtime: Runtime) -> str:
    parts = []
    async with runtime.uow() as uow:
        for table in all_tables():
            for row in await uow.fetch_all(sa.select(table)):
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("utf-8", "replace")
                    parts.append(repr(value))
    return "\n".join(parts)


async def _configure(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/gateways", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def test_create_returns_a_summary_never_the_credentials(api) -> None:
    response = await api.post("/v1/gateways", json={"name": "stripe", "credentials": STRIPE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].startswith("gw_")
    assert body["object"] == "gateway"
    assert body["name"] == "stripe"
    assert body["enabled"] is True
    assert body["credentials_summary"] == {"api_key_last4": "4242"}
    assert set(body) == {
        "id",
        "object",
        "name",
        "enabled",
        "credentials_summary",
        "created",
        "updated",
    }
    adyen = await _configure(api, name="adyen", credentials=ADYEN, enabled=False)
    assert adyen["credentials_summary"] == {"api_key_last4": "7777", "merchant_account": "AcmeECOM"}
    assert adyen["enabled"] is False
    manual = await _configure(api, name="manual")
    assert manual["credentials_summary"] == {}

    assert (await api.get(f"/v1/gateways/{body['id']}")).json() == body
    listed = (await api.get("/v1/gateways")).json()
    assert [g["name"] for g in listed["data"]] == ["manual", "adyen", "stripe"]  # newest first
    assert listed["has_more"] is False
    page = (await api.get("/v1/gateways", params={"limit": 2})).json()
    assert [g["name"] for g in page["data"]] == ["manual", "adyen"] and page["has_more"]
    rest = (
        await api.get("/v1/gateways", params={"limit": 2, "starting_after": page["data"][1]["id"]})
    ).json()
    assert [g["name"] for g in rest["data"]] == ["stripe"] and not rest["has_more"]


async def test_credentials_are_encrypted_at_rest(api, runtime, tenant) -> None:
    created = await _configure(api, name="stripe", credentials=STRIPE)
    (row,) = await _rows(runtime)
    assert row.id == created["id"]
    token = row.credentials_encrypted
    for secret in (STRIPE["api_key"], STRIPE["webhook_secret"]):
        for part in _secret_parts(secret):
            assert part not in token
    # It is a Fernet token of the settings' key, carrying the tenant and the gateway's name.
    envelope = orjson.loads(Fernet(KEY).decrypt(token.encode()))
    assert envelope == {"tenant_id": tenant.id, "gateway": "stripe", "credentials": STRIPE}
    # Another key opens nothing.
    with pytest.raises(InvalidToken):
        Fernet(Fernet.generate_key()).decrypt(token.encode())
    # Gateways with no credentials store no token at all.
    await _configure(api, name="sandbox")
    rows = {r.name: r for r in await _rows(runtime)}
    assert rows["sandbox"].credentials_encrypted is None


async def test_update_replaces_credentials_and_toggles_enabled(api, runtime) -> None:
    created = await _configure(api, name="stripe", credentials=STRIPE)
    gid = created["id"]
    new = {"api_key": "rk_live_aNoThErKeY00001234", "webhook_secret": "whsec_NeWsEcReT5555"}
    response = await api.post(f"/v1/gateways/{gid}", json={"credentials": new})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["credentials_summary"] == {"api_key_last4": "1234"}
    assert body["enabled"] is True and body["created"] == created["created"]
    (row,) = await _rows(runtime)
    assert orjson.loads(Fernet(KEY).decrypt(row.credentials_encrypted.encode()))["credentials"] == (
        new
    )
    body = (await api.post(f"/v1/gateways/{gid}", json={"enabled": False})).json()
    assert body["enabled"] is False and body["credentials_summary"] == {"api_key_last4": "1234"}
    assert (await api.post(f"/v1/gateways/{gid}", json={})).json() == body

    deleted = await api.delete(f"/v1/gateways/{gid}")
    assert deleted.status_code == 200 and deleted.json()["id"] == gid
    assert (await api.get(f"/v1/gateways/{gid}")).status_code == 404
    assert await _rows(runtime) == []
    # Once deleted, the name can be configured again.
    await _configure(api, name="stripe", credentials=STRIPE)


async def test_a_gateway_is_configured_once_per_tenant(api, other_tenant) -> None:
    first = await _configure(api, name="stripe", credentials=STRIPE)
    response = await api.post("/v1/gateways", json={"name": "stripe", "credentials": STRIPE})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "gateway_exists" and first["id"] in error["message"]
    # Another tenant has its own.
    await _configure(other_tenant.client, name="stripe", credentials=STRIPE)


@pytest.mark.parametrize(
    "body",
    [
        # The adapters' own settings are the judge: a webhook secret is needed only to
        # receive webhooks, Adyen's HMAC key likewise, and the sandbox takes its faults.
        {"name": "stripe", "credentials": {"api_key": STRIPE["api_key"]}},
        {"name": "adyen", "credentials": {"api_key": ADYEN["api_key"], "merchant_account": "M"}},
        {"name": "sandbox", "credentials": {"faults": {"timeout_share": 0.3}}},
    ],
)
async def test_credentials_the_adapter_accepts_are_accepted(api, body) -> None:
    response = await api.post("/v1/gateways", json=body)
    assert response.status_code == 200, response.text
    assert "credentials" not in response.json()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"credentials": STRIPE}, "name"),
        ({"name": "paypal", "credentials": STRIPE}, "name"),
        ({"name": None}, "name"),
        ({"name": "stripe"}, "credentials.api_key"),
        ({"name": "stripe", "credentials": None}, "credentials"),
        ({"name": "stripe", "credentials": ["sk_test_x"]}, "credentials"),
        ({"name": "stripe", "credentials": "sk_test_123456789"}, "credentials"),
        (stripe(api_key="short"), "credentials.api_key"),
        (stripe(api_key="pk_test_51Hx9PuBlIsHaBlE"), "credentials.api_key"),
        (stripe(api_key=12345678901), "credentials.api_key"),
        (stripe(api_key="sk_test 12345678"), "credentials.api_key"),
        (stripe(api_key="sk_test_12345678\n"), "credentials.api_key"),
        (stripe(api_key="x" * 501), "credentials.api_key"),
        (stripe(api_key="sk_test_ключ12345678"), "credentials.api_key"),
        (stripe(webhook_secret="whsec_\x01\x021234"), "credentials.webhook_secret"),
        (stripe(apikey="sk_test_123456789"), "credentials.apikey"),
        (adyen(hmac_key="not-hex-at-all"), "credentials.hmac_key"),
        (adyen(hmac_key="ABC"), "credentials.hmac_key"),
        (adyen(merchant_account=""), "credentials.merchant_account"),
        (
            {"name": "adyen", "credentials": {"api_key": ADYEN["api_key"]}},
            "credentials.merchant_account",
        ),
        (
            {"name": "manual", "credentials": {"api_key": "sk_test_123456789"}},
            "credentials.api_key",
        ),
        ({"name": "sandbox", "credentials": {"anything": "x"}}, "credentials.anything"),
        ({**stripe(), "enabled": "yes"}, "enabled"),
        ({**stripe(), "enabled": 1}, "enabled"),
        ({**stripe(), "enabled": None}, "enabled"),
    ],
)
async def test_bad_gateway_input_is_400_naming_the_field(api, runtime, body, param) -> None:
    response = await api.post("/v1/gateways", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    for secret in SECRETS:
        assert secret not in response.text
    assert await _rows(runtime) == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"credentials": {"api_key": "pk_test_51Hx9PuBlIsHaBlE"}}, "credentials.api_key"),
        ({"credentials": {**STRIPE, "merchant_account": "x"}}, "credentials.merchant_account"),
        ({"credentials": "x"}, "credentials"),
        ({"enabled": "no"}, "enabled"),
    ],
)
async def test_bad_update_is_400_and_changes_nothing(api, runtime, body, param) -> None:
    created = await _configure(api, name="stripe", credentials=STRIPE)
    before = await _rows(runtime)
    response = await api.post(f"/v1/gateways/{created['id']}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert await _rows(runtime) == before
    assert (await api.get(f"/v1/gateways/{created['id']}")).json() == created


@pytest.mark.parametrize("gateway_id", ["gw_missing", "gw_%01", "x" * 65, "gw;drop"])
async def test_unknown_gateway_is_404(api, gateway_id) -> None:
    for response in (
        await api.get(f"/v1/gateways/{gateway_id}"),
        await api.post(f"/v1/gateways/{gateway_id}", json={"enabled": False}),
        await api.delete(f"/v1/gateways/{gateway_id}"),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"


async def test_bad_list_parameters_are_400(api) -> None:
    for params in ({"limit": 0}, {"limit": 101}, {"starting_after": "gw_\x00"}):
        response = await api.get("/v1/gateways", params=params)
        assert response.status_code == 400, (params, response.text)


async def _runtime_without_key(database_url: str) -> Runtime:
    return build_runtime(
        Settings(
            database_url=database_url,
            scheduler_enabled=False,
            rate_limit_per_second=1000,
            rate_limit_burst=1000,
        )
    )


async def _client(rt: Runtime, tenant: str) -> AsyncIterator[httpx.AsyncClient]:
    issued = await create_key(rt.db, rt.clock, tenant)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(rt)),
        base_url="http://recur.test",
        headers={"Authorization": f"Bearer {issued.secret}"},
    ) as client:
        yield client


async def test_without_a_key_credentials_are_refused_never_stored_in_clear(
    database_url: str,
) -> None:
    rt = await _runtime_without_key(database_url)
    try:
        async for api in _client(rt, "acme"):
            for name, credentials in (("stripe", STRIPE), ("adyen", ADYEN)):
                response = await api.post(
                    "/v1/gateways", json={"name": name, "credentials": credentials}
                )
                assert response.status_code == 409, response.text
                error = response.json()["error"]
                assert error["code"] == "credentials_key_missing"
                assert "RECUR_GATEWAY_CREDENTIALS_KEY" in error["message"]
            # Bad credentials are still named first.
            response = await api.post("/v1/gateways", json={"name": "stripe", "credentials": {}})
            assert response.status_code == 400
            assert await _rows(rt) == []
            # Gateways without credentials need no key.
            await _configure(api, name="manual")
            sandbox = await _configure(api, name="sandbox", enabled=False)
            assert (await api.post(f"/v1/gateways/{sandbox['id']}", json={"enabled": True})).json()[
                "enabled"
            ]
            assert {r.name for r in await _rows(rt)} == {"manual", "sandbox"}
    finally:
        await rt.close()


async def test_tenants_never_see_each_others_gateways_or_rules(api, other_tenant, runtime) -> None:
    mine = await _configure(api, name="stripe", credentials=STRIPE)
    rule = (
        await api.post("/v1/routing-rules", json={"priority": 1, "gateways": ["stripe"]})
    ).json()
    theirs = other_tenant.client
    assert (await theirs.get("/v1/gateways")).json()["data"] == []
    assert (await theirs.get("/v1/routing-rules")).json()["data"] == []
    for path, update in (
        (f"/v1/gateways/{mine['id']}", {"enabled": False}),
        (f"/v1/routing-rules/{rule['id']}", {"priority": 2}),
    ):
        assert (await theirs.get(path)).status_code == 404
        assert (await theirs.post(path, json=update)).status_code == 404
        assert (await theirs.delete(path)).status_code == 404
    # The other tenant has no stripe configured: its rules may not name it.
    response = await theirs.post("/v1/routing-rules", json={"priority": 1, "gateways": ["stripe"]})
    assert response.status_code == 400 and response.json()["error"]["param"] == "gateways.0"
    # A cursor of another tenant's rule is not a cursor.
    response = await theirs.get("/v1/routing-rules", params={"starting_after": rule["id"]})
    assert response.status_code == 400
    # Mine are intact.
    assert (await api.get(f"/v1/gateways/{mine['id']}")).json() == mine
    assert (await api.get(f"/v1/routing-rules/{rule['id']}")).json() == rule
    assert len(await _rows(runtime)) == 1


async def test_rules_create_read_list_update_delete(api) -> None:
    await _configure(api, name="stripe", credentials=STRIPE)
    await _configure(api, name="adyen", credentials=ADYEN)
    body = {
        "priority": 10,
        "conditions": {"currency": "eur", "amount_min": 1000, "amount_max": 5000},
        "gateways": ["adyen", "stripe"],
    }
    response = await api.post("/v1/routing-rules", json=body)
    assert response.status_code == 200, response.text
    eur = response.json()
    assert eur["id"].startswith("rr_") and eur["object"] == "routing_rule"
    assert eur["conditions"] == {
        "currency": "EUR",
        "amount_min": 1000,
        "amount_max": 5000,
        "card_brand": None,
    }
    assert eur["gateways"] == ["adyen", "stripe"] and eur["split"] is None
    split = (
        await api.post(
            "/v1/routing-rules",
            json={
                "priority": 5,
                "conditions": {"card_brand": "visa"},
                "split": shares(("stripe", 70), ("sandbox", 30)),
            },
        )
    ).json()
    assert split["split"] == shares(("stripe", 70), ("sandbox", 30))
    assert split["gateways"] is None
    catch_all = (
        await api.post("/v1/routing-rules", json={"priority": 10, "gateways": ["sandbox"]})
    ).json()
    assert catch_all["conditions"] == {
        "currency": None,
        "amount_min": None,
        "amount_max": None,
        "card_brand": None,
    }

    # Listed in the order they are tried: priority, then the oldest first.
    listed = (await api.get("/v1/routing-rules")).json()
    assert [r["id"] for r in listed["data"]] == [split["id"], eur["id"], catch_all["id"]]
    first = (await api.get("/v1/routing-rules", params={"limit": 1})).json()
    assert [r["id"] for r in first["data"]] == [split["id"]] and first["has_more"]
    after = (
        await api.get("/v1/routing-rules", params={"limit": 1, "starting_after": split["id"]})
    ).json()
    assert [r["id"] for r in after["data"]] == [eur["id"]] and after["has_more"]
    last = (
        await api.get("/v1/routing-rules", params={"limit": 5, "starting_after": eur["id"]})
    ).json()
    assert [r["id"] for r in last["data"]] == [catch_all["id"]] and not last["has_more"]

    # Update: the split becomes a list; the conditions are replaced whole.
    response = await api.post(
        f"/v1/routing-rules/{split['id']}",
        json={"priority": 20, "conditions": {"currency": "USD"}, "gateways": ["stripe"]},
    )
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (
        changed["priority"] == 20 and changed["gateways"] == ["stripe"] and changed["split"] is None
    )
    assert (
        changed["conditions"]["card_brand"] is None and changed["conditions"]["currency"] == "USD"
    )
    assert changed["created"] == split["created"]
    assert (await api.get(f"/v1/routing-rules/{split['id']}")).json() == changed
    back = (
        await api.post(
            f"/v1/routing-rules/{split['id']}",
            json={"split": shares(("sandbox", 100))},
        )
    ).json()
    assert back["gateways"] is None and back["split"] == shares(("sandbox", 100))
    assert back["priority"] == 20  # kept
    listed = (await api.get("/v1/routing-rules")).json()
    assert [r["id"] for r in listed["data"]] == [eur["id"], catch_all["id"], split["id"]]

    deleted = await api.delete(f"/v1/routing-rules/{eur['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == eur["id"]
    assert (await api.get(f"/v1/routing-rules/{eur['id']}")).status_code == 404
    assert (await api.delete(f"/v1/routing-rules/{eur['id']}")).status_code == 404


async def test_a_gateway_a_rule_names_cannot_be_deleted(api) -> None:
    stripe = await _configure(api, name="stripe", credentials=STRIPE)
    sandbox = await _configure(api, name="sandbox")
    rule = (
        await api.post(
            "/v1/routing-rules",
            json={"priority": 1, "split": shares(("sandbox", 50), ("stripe", 50))},
        )
    ).json()
    response = await api.delete(f"/v1/gateways/{stripe['id']}")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "gateway_in_use"
    assert rule["id"] in response.json()["error"]["message"]
    assert (await api.get(f"/v1/gateways/{stripe['id']}")).status_code == 200
    # Disabling it is allowed; the sandbox is always available, so its row may go.
    assert (
        await api.post(f"/v1/gateways/{stripe['id']}", json={"enabled": False})
    ).status_code == 200
    assert (await api.delete(f"/v1/gateways/{sandbox['id']}")).status_code == 200
    await api.delete(f"/v1/routing-rules/{rule['id']}")
    assert (await api.delete(f"/v1/gateways/{stripe['id']}")).status_code == 200


GOOD_RULE: dict[str, Any] = {"priority": 1, "gateways": ["sandbox"]}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"gateways": ["sandbox"]}, "priority"),
        ({**GOOD_RULE, "priority": -1}, "priority"),
        ({**GOOD_RULE, "priority": 1.5}, "priority"),
        ({**GOOD_RULE, "priority": "1"}, "priority"),
        ({**GOOD_RULE, "priority": 10**7}, "priority"),
        ({"priority": 1}, "gateways"),
        ({**GOOD_RULE, "split": shares(("sandbox", 100))}, "split"),
        ({"priority": 1, "gateways": []}, "gateways"),
        ({"priority": 1, "gateways": "sandbox"}, "gateways"),
        ({"priority": 1, "gateways": ["paypal"]}, "gateways.0"),
        ({"priority": 1, "gateways": ["adyen"]}, "gateways.0"),  # not configured
        ({"priority": 1, "gateways": ["sandbox", "stripe", "sandbox"]}, "gateways.2"),
        ({"priority": 1, "gateways": ["sandbox"] * 5}, "gateways"),
        ({"priority": 1, "split": []}, "split"),
        ({"priority": 1, "split": shares(("sandbox", 90))}, "split"),
        ({"priority": 1, "split": shares(("sandbox", 60), ("stripe", 60))}, "split"),
        ({"priority": 1, "split": shares(("sandbox", 0), ("stripe", 100))}, "split.0.percent"),
        ({"priority": 1, "split": shares(("sandbox", 101))}, "split.0.percent"),
        ({"priority": 1, "split": shares(("sandbox", 50.5), ("stripe", 49.5))}, "split.0.percent"),
        ({"priority": 1, "split": shares(("sandbox", "50"), ("stripe", 50))}, "split.0.percent"),
        ({"priority": 1, "split": shares(("sandbox", 50), ("sandbox", 50))}, "split.1.gateway"),
        ({"priority": 1, "split": shares(("sandbox", 50), ("adyen", 50))}, "split.1.gateway"),
        ({"priority": 1, "split": shares(("sandbox", 50), ("paypal", 50))}, "split.1.gateway"),
        ({"priority": 1, "split": [{"percent": 100}]}, "split.0.gateway"),
        ({**GOOD_RULE, "conditions": "EUR"}, "conditions"),
        ({**GOOD_RULE, "conditions": {"currency": "ABC"}}, "conditions.currency"),
        ({**GOOD_RULE, "conditions": {"currency": "EURO!!!!!"}}, "conditions.currency"),
        ({**GOOD_RULE, "conditions": {"currency": 978}}, "conditions.currency"),
        ({**GOOD_RULE, "conditions": {"amount_min": -1}}, "conditions.amount_min"),
        ({**GOOD_RULE, "conditions": {"amount_max": "100"}}, "conditions.amount_max"),
        ({**GOOD_RULE, "conditions": {"amount_max": 2**63}}, "conditions.amount_max"),
        ({**GOOD_RULE, "conditions": {"amount_min": 5, "amount_max": 4}}, "conditions.amount_max"),
        ({**GOOD_RULE, "conditions": {"card_brand": "visa electron"}}, "conditions.card_brand"),
    ],
)
async def test_bad_rule_input_is_400_naming_the_field(api, runtime, body, param) -> None:
    await _configure(api, name="stripe", credentials=STRIPE)
    response = await api.post("/v1/routing-rules", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert (await api.get("/v1/routing-rules")).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"gateways": ["sandbox"], "split": shares(("sandbox", 100))}, "split"),
        ({"gateways": ["adyen"]}, "gateways.0"),
        ({"split": shares(("sandbox", 99))}, "split"),
        ({"priority": -5}, "priority"),
        ({"conditions": {"amount_min": 10, "amount_max": 9}}, "conditions.amount_max"),
        ({"conditions": {"currency": "ZZZ"}}, "conditions.currency"),
    ],
)
async def test_bad_rule_update_is_400_and_changes_nothing(api, body, param) -> None:
    rule = (
        await api.post(
            "/v1/routing-rules",
            json={"priority": 3, "conditions": {"currency": "EUR"}, "gateways": ["sandbox"]},
        )
    ).json()
    response = await api.post(f"/v1/routing-rules/{rule['id']}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert (await api.get(f"/v1/routing-rules/{rule['id']}")).json() == rule


async def test_unknown_rule_is_404_and_bad_cursor_400(api) -> None:
    for rule_id in ("rr_missing", "rr_%01", "r" * 65):
        for response in (
            await api.get(f"/v1/routing-rules/{rule_id}"),
            await api.post(f"/v1/routing-rules/{rule_id}", json={"priority": 1}),
            await api.delete(f"/v1/routing-rules/{rule_id}"),
        ):
            assert response.status_code == 404, response.text
    for params in ({"starting_after": "rr_missing"}, {"starting_after": "rr_\x00"}, {"limit": 0}):
        response = await api.get("/v1/routing-rules", params=params)
        assert response.status_code == 400, (params, response.text)


async def test_idempotent_create_replays_without_a_second_gateway(api, runtime) -> None:
    headers = {"Idempotency-Key": "gw-stripe-1"}
    body = {"name": "stripe", "credentials": STRIPE}
    first = await api.post("/v1/gateways", json=body, headers=headers)
    replay = await api.post("/v1/gateways", json=body, headers=headers)
    assert first.status_code == replay.status_code == 200
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json() == first.json()
    other = await api.post(
        "/v1/gateways",
        json={"name": "stripe", "credentials": {**STRIPE, "api_key": "sk_test_different00"}},
        headers=headers,
    )
    assert other.status_code == 409
    assert len(await _rows(runtime)) == 1


async def test_secrets_never_appear_in_responses_logs_or_tables(api, runtime, caplog) -> None:
    # Every logger, SQL statements with their parameters too.
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    responses = []

    async def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await api.request(method, path, **kwargs)
        responses.append(response)
        return response

    stripe = (
        await call("POST", "/v1/gateways", json={"name": "stripe", "credentials": STRIPE})
    ).json()
    await call(
        "POST",
        "/v1/gateways",
        json={"name": "adyen", "credentials": ADYEN},
        headers={"Idempotency-Key": "adyen"},
    )
    await call(
        "POST",
        "/v1/gateways",
        json={"name": "adyen", "credentials": ADYEN},
        headers={"Idempotency-Key": "adyen"},
    )
    await call("POST", "/v1/gateways", json={"name": "stripe", "credentials": STRIPE})  # 409
    await call(
        "POST", "/v1/gateways", json={"name": "manual", "credentials": STRIPE}
    )  # 400: manual takes none
    await call(
        "POST",
        f"/v1/gateways/{stripe['id']}",
        json={"credentials": {**STRIPE, "webhook_secret": "bad secret with spaces"}},
    )
    await call("POST", f"/v1/gateways/{stripe['id']}", json={"credentials": STRIPE})
    await call("POST", "/v1/routing-rules", json={"priority": 1, "gateways": ["adyen", "stripe"]})
    await call("GET", "/v1/gateways")
    await call("GET", f"/v1/gateways/{stripe['id']}")
    await call("GET", "/v1/routing-rules")
    await call("DELETE", f"/v1/gateways/{stripe['id']}")  # 409: a rule names it
    assert [r.status_code for r in responses] == [
        200, 200, 200, 409, 400, 400, 200, 200, 200, 200, 200, 409,
    ]  # fmt: skip

    stored = await _dump_all(runtime)
    logged = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records
    )
    # What is checked is real: the SQL and its parameters were logged, the tokens stored.
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)
    assert "payment_gateways" in logged and "AcmeECOM" in stored
    tokens = [r.credentials_encrypted for r in await _rows(runtime)]
    assert all(tokens) and all(token[:40] in logged for token in tokens)  # SQL logs cut them
    for secret in SECRETS:
        for part in _secret_parts(secret):
            assert part not in stored, "a secret is stored in clear"
            assert part not in logged, "a secret is logged"
            for response in responses:
                assert part not in response.text, f"a secret echoed by {response.request.url}"
                assert part not in str(response.headers)


async def test_the_payments_service_process_and_the_gateway_serve_them(runtime) -> None:
    templates = route_templates()["payments"]
    for path in (
        "/v1/gateways",
        "/v1/gateways/{gateway_id}",
        "/v1/routing-rules",
        "/v1/routing-rules/{rule_id}",
    ):
        assert path in templates
    issued = await create_key(runtime.db, runtime.clock, "acme")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_service_app(runtime, "payments")),
        base_url="http://payments.test",
        headers={"Authorization": f"Bearer {issued.secret}"},
    ) as client:
        created = await _configure(client, name="stripe", credentials=STRIPE)
        assert created["credentials_summary"] == {"api_key_last4": "4242"}
        response = await client.post(
            "/v1/routing-rules", json={"priority": 1, "gateways": ["stripe"]}
        )
        assert response.status_code == 200, response.text
        assert (await client.get(f"/v1/gateways/{created['id']}")).json() == created
