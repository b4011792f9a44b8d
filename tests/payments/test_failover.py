"""Failover: two gateways in a routing rule, the first taken down for real.

The tenant configures `stripe` and routes to it first; the second gateway is the built-in
sandbox or `adyen`. Stripe and Adyen are the local HTTP fakes (`tests/payments/fakes/`),
reached through RECUR_GATEWAY_BASE_URLS as a staging topology reaches a gateway's mock server.
"Down" is the stripe fake's server stopped: its port refuses connections. Payments then go
through the second gateway with the attempts recorded, the breaker skips stripe after its
threshold, and once stripe is back and the breaker's cool-down has passed, payments go to
stripe again. A decline is not retried elsewhere; an unknown outcome is never sent elsewhere.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from cryptography.fernet import Fernet
from pydantic import ValidationError

from recur.bench_failover import failover_run
from recur.kit.clock import SystemClock
from recur.payments import attempts
from recur.payments.breaker import GatewayBreakers
from recur.payments.reconcile import reconcile
from recur.payments.tables import payment_method_tokens
from recur.settings import Settings
from recur.verify import verify

KEY = Fernet.generate_key().decode()
FAILURES_TO_OPEN = 3
COOL_DOWN = 30.0
# What a charge sent to a port that refuses connections ends in: nothing reached stripe.
REFUSED = ("stripe", "retriable_error", "connection_failed")
ADYEN_HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
FAKES = "payment_gateway_fakes"


def _fakes_module(name: str) -> Any:
    """A module of the fakes, loaded as the package `payment_gateway_fakes` (the test tree
    has no packages to import them from)."""
    folder = Path(__file__).resolve().parent / "fakes"
    if FAKES not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            FAKES, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None
        sys.modules[FAKES] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{FAKES}.{name}")


class Switchable:
    """A gateway fake served on one loopback port that the test can stop and start again."""

    def __init__(self, fake: Any):
        self.fake = fake
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def up(self) -> None:
        runner = web.AppRunner(self.fake.app(), shutdown_timeout=1.0, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def down(self) -> None:
        """Stop listening: a connection to the port is refused from now on."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        self.fake.faults.release()
        await self.down()


async def _served(fake: Any) -> AsyncIterator[Switchable]:
    server = Switchable(fake)
    await server.up()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def stripe_server() -> AsyncIterator[Switchable]:
    async for server in _served(_fakes_module("stripe_fake").StripeFake(SystemClock())):
        yield server


@pytest.fixture
async def adyen_server() -> AsyncIterator[Switchable]:
    async for server in _served(_fakes_module("adyen_fake").AdyenFake(SystemClock())):
        yield server


@pytest.fixture
def settings(database_url: str, stripe_server: Switchable, adyen_server: Switchable) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        gateway_credentials_key=KEY,
        gateway_base_urls=f"stripe={stripe_server.url},adyen={adyen_server.url}",
    )


class BreakerClock:
    """The breakers' monotonic clock, moved by the test instead of waiting out a cool-down."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def breaker_clock(monkeypatch: pytest.MonkeyPatch) -> BreakerClock:
    clock = BreakerClock()
    breakers = GatewayBreakers(FAILURES_TO_OPEN, COOL_DOWN, now=clock)
    monkeypatch.setattr(attempts, "BREAKERS", breakers)
    return clock


async def _configure(api: Any, name: str, credentials: dict[str, Any]) -> None:
    response = await api.post("/v1/gateways", json={"name": name, "credentials": credentials})
    assert response.status_code == 200, response.text


async def _route(api: Any, *gateways: str) -> dict[str, Any]:
    response = await api.post("/v1/routing-rules", json={"priority": 1, "gateways": list(gateways)})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture
async def stripe(api: Any, stripe_server: Switchable, breaker_clock: BreakerClock) -> Any:
    """The tenant's stripe account at the fake."""
    await _configure(api, "stripe", {"api_key": stripe_server.fake.api_key})
    return stripe_server.fake


@pytest.fixture
async def adyen(api: Any, adyen_server: Switchable) -> Any:
    """The tenant's adyen account at the fake."""
    fake = adyen_server.fake
    credentials = {
        "api_key": fake.api_key,
        "merchant_account": fake.merchant_account,
        "hmac_key": ADYEN_HMAC_KEY,
    }
    await _configure(api, "adyen", credentials)
    return fake


@pytest.fixture
async def rule(api: Any, stripe: Any) -> dict[str, Any]:
    return await _route(api, "stripe", "sandbox")


async def _customer_with_card(make_customer, attach, number: str = "4242424242424242") -> str:
    customer = await make_customer()
    response = await attach(customer["id"], number)
    assert response.status_code == 200, response.text
    assert response.json()["gateway"] == "stripe"  # the route's first gateway
    return str(customer["id"])


async def _pay(api: Any, customer_id: str, amount: int = 1500) -> dict[str, Any]:
    response = await api.post(
        "/v1/payments", json={"customer_id": customer_id, "amount": amount, "currency": "USD"}
    )
    assert response.status_code in (200, 402), response.text
    payment = (
        response.json() if response.status_code == 200 else response.json()["error"]["payment"]
    )
    return dict((await api.get(f"/v1/payments/{payment['id']}")).json())


def _tried(payment: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["gateway"], a["outcome"], a["failure_code"]) for a in payment["attempts"]]


async def test_a_card_is_tokenized_at_every_gateway(
    api, runtime, stripe, adyen, make_customer, attach
) -> None:
    await _route(api, "stripe", "adyen")
    await _customer_with_card(make_customer, attach)
    async with runtime.uow() as uow:
        rows = await uow.fetch_all(sa.select(payment_method_tokens))
    # The first gateway's token is the method's own; the others' are kept beside it.
    assert sorted(row.gateway for row in rows) == ["adyen", "sandbox"]
    [(stripe_customer, method)] = [(c, m) for m in stripe.payment_methods for c in stripe.customers]
    assert stripe.payment_methods[method]["customer"] == stripe_customer
    assert len(adyen.stored) == 1


@pytest.mark.parametrize("second", ["sandbox", "adyen"])
async def test_stripe_down_sends_payments_to_the_next_gateway_until_it_is_back(
    api, runtime, stripe, adyen, stripe_server, breaker_clock, make_customer, attach, second
) -> None:
    rule = await _route(api, "stripe", second)
    customer_id = await _customer_with_card(make_customer, attach)
    await stripe_server.down()

    for _ in range(FAILURES_TO_OPEN):  # retriable errors in a row, up to the threshold
        payment = await _pay(api, customer_id)
        assert (payment["status"], payment["gateway"]) == ("succeeded", second)
        assert payment["routing_rule_id"] == rule["id"]
        assert (
            payment["routing_reason"] == f"rule {rule['id']}: any payment -> stripe then {second}"
        )
        assert _tried(payment) == [REFUSED, (second, "succeeded", None)]
        keys = [a["idempotency_key"] for a in payment["attempts"]]
        assert keys == [f"{payment['id']}-1", f"{payment['id']}-2"]
        if second == "adyen":  # charged there once, under the second attempt's key
            [charged] = adyen.payments_with_reference(keys[1])
            assert charged["amount"] == 1500

    # The breaker is open: stripe is skipped without a call, still while it is back up.
    await stripe_server.up()
    payment = await _pay(api, customer_id)
    assert (payment["status"], payment["gateway"]) == ("succeeded", second)
    assert _tried(payment) == [
        ("stripe", "skipped", "breaker_open"),
        (second, "succeeded", None),
    ]
    assert stripe.intents_with_key(payment["attempts"][0]["idempotency_key"]) == []

    # After the cool-down, a trial charge goes to stripe; it answers, and stays in use.
    breaker_clock.seconds += COOL_DOWN
    for _ in range(2):
        payment = await _pay(api, customer_id)
        assert (payment["gateway"], _tried(payment)) == ("stripe", [("stripe", "succeeded", None)])
        [intent] = stripe.intents_with_key(payment["attempts"][0]["idempotency_key"])
        assert (intent["status"], intent["amount"]) == ("succeeded", 1500)
    assert all(f.ok for f in await verify(runtime.db))


async def test_a_refund_goes_to_the_gateway_at_its_configured_address(
    api, rule, stripe, make_customer, attach
) -> None:
    customer_id = await _customer_with_card(make_customer, attach)
    payment = await _pay(api, customer_id)
    assert payment["gateway"] == "stripe"
    response = await api.post("/v1/refunds", json={"payment_id": payment["id"], "amount": 500})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "succeeded"
    [refund] = stripe.refunds.values()
    assert (refund["amount"], refund["payment_intent"]) == (500, payment["gateway_reference"])


async def test_the_bill_run_batch_fails_over_too(
    api, runtime, tenant, rule, stripe_server, make_customer, attach, make_order
) -> None:
    customer_ids = [await _customer_with_card(make_customer, attach) for _ in range(3)]
    orders = [await make_order(c, 800) for c in customer_ids]
    await stripe_server.down()
    answers = await runtime.payments.charge_orders(tenant.id, [o["id"] for o in orders])
    assert [a.outcome for a in answers] == ["succeeded"] * 3
    for answer in answers:
        assert answer.payment is not None and answer.payment.gateway == "sandbox"
        payment = (await api.get(f"/v1/payments/{answer.payment.id}")).json()
        assert payment["routing_reason"] == f"rule {rule['id']}: any payment -> stripe then sandbox"
        assert _tried(payment) == [REFUSED, ("sandbox", "succeeded", None)]
    # Three refusals in one batch open the breaker: the next batch skips stripe.
    more = [await make_order(c, 800) for c in customer_ids]
    answers = await runtime.payments.charge_orders(tenant.id, [o["id"] for o in more])
    for answer in answers:
        assert answer.payment is not None and answer.payment.gateway == "sandbox"
        payment = (await api.get(f"/v1/payments/{answer.payment.id}")).json()
        assert _tried(payment) == [
            ("stripe", "skipped", "breaker_open"),
            ("sandbox", "succeeded", None),
        ]
    assert all(f.ok for f in await verify(runtime.db))


async def test_a_decline_is_not_retried_elsewhere(api, rule, stripe, make_customer, attach) -> None:
    customer_id = await _customer_with_card(make_customer, attach, "4000000000000341")
    payment = await _pay(api, customer_id)
    assert (payment["status"], payment["failure_code"]) == ("failed", "card_declined")
    assert _tried(payment) == [("stripe", "declined", "card_declined")]
    [intent] = stripe.intents_with_key(payment["attempts"][0]["idempotency_key"])
    assert intent["status"] == "requires_payment_method"


async def test_an_unknown_outcome_is_never_sent_to_another_gateway(
    api, runtime, rule, stripe, make_customer, attach, monkeypatch
) -> None:
    customer_id = await _customer_with_card(make_customer, attach)
    # Stripe makes the charge and its answer never comes back: the adapter gives up first.
    monkeypatch.setattr(
        attempts, "build_gateway", functools.partial(attempts.build_gateway, timeout_seconds=0.3)
    )
    stripe.faults.stall_next(processed=True)
    payment = await _pay(api, customer_id)
    assert payment["status"] == "pending"
    assert (payment["gateway"], _tried(payment)) == ("stripe", [("stripe", "unknown", "timeout")])
    # The reconciler asks stripe by the attempt's key: it was charged there, once.
    result = await reconcile(runtime, unknown_after=timedelta(0))
    assert (result.asked, result.succeeded) == (1, 1)
    payment = (await api.get(f"/v1/payments/{payment['id']}")).json()
    assert (payment["status"], payment["gateway"]) == ("succeeded", "stripe")
    assert _tried(payment) == [("stripe", "succeeded", None)]
    assert len(stripe.intents_with_key(payment["attempts"][0]["idempotency_key"])) == 1
    assert all(f.ok for f in await verify(runtime.db))


async def test_every_gateway_down_fails_the_payment_unavailable(
    api, stripe, stripe_server, make_customer, attach
) -> None:
    await _route(api, "stripe")
    customer_id = await _customer_with_card(make_customer, attach)
    await stripe_server.down()
    payment = await _pay(api, customer_id)
    assert (payment["status"], payment["failure_code"]) == ("failed", "gateways_unavailable")
    assert _tried(payment) == [REFUSED]


async def test_the_failover_bench_reports_what_happened(runtime, stripe_server) -> None:
    await stripe_server.down()
    report = await failover_run(runtime, 20)
    assert (report.payments, report.failed, report.pending_left) == (20, 0, 0)
    assert report.succeeded_by_gateway == {"sandbox": 20}
    refused = report.attempts_seen[REFUSED]
    # Five refusals open the breaker; up to five more were planned before the fifth was known.
    assert 5 <= refused <= 10
    assert report.attempts_seen[("stripe", "skipped", "breaker_open")] == 20 - refused
    assert (report.stripe_calls, report.stripe_answered) == (refused, 0)
    assert (report.orders_charged_twice, report.verify_failures) == (0, [])
    assert report.ok


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("braintree=http://127.0.0.1:9", "unknown gateways ['braintree']"),
        ("stripe", "is not NAME=http://host:port"),
        ("stripe=ftp://127.0.0.1:9", "stripe: expected an http:// or https:// URL"),
    ],
)
def test_a_bad_gateway_base_url_is_a_settings_error(value: str, error: str) -> None:
    with pytest.raises(ValidationError, match="gateway_base_urls") as raised:
        Settings(gateway_base_urls=value)
    assert error in str(raised.value)


def test_gateway_base_urls_are_read_as_name_equals_url() -> None:
    settings = Settings(gateway_base_urls="stripe=http://127.0.0.1:12111/, adyen=https://a.test")
    assert settings.gateway_base_urls == {
        "stripe": "http://127.0.0.1:12111",
        "adyen": "https://a.test",
    }
