"""The sandbox told to misbehave: latency, timeouts whose truth lookup tells, retriable failures;
and its lookups and signed webhooks."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from recur.kit.clock import FrozenClock
from recur.payments.gateways import build_gateway
from recur.payments.gateways.base import (
    ChargeStatus,
    GatewayConfigError,
    GatewayOutcomeUnknown,
    GatewayRetriableError,
    WebhookKind,
    WebhookSignatureError,
)
from recur.payments.gateways.sandbox import SandboxGateway, signed_webhook
from recur.payments.gateways.sandbox_faults import Fate, SandboxFaults
from recur.payments.schemas import CardIn

NOW = datetime(2030, 6, 15, tzinfo=UTC)
KEYS = [f"pay_{n:05d}" for n in range(2000)]


def _sandbox(**faults: object) -> SandboxGateway:
    return SandboxGateway(FrozenClock(NOW), faults=SandboxFaults.model_validate(faults))


async def _token(gateway: SandboxGateway, number: str = "4242424242424242") -> str:
    card = CardIn(number=number, exp_month=12, exp_year=2040, cvc="123")
    return (await gateway.tokenize(card)).token


async def _attempt(gateway: SandboxGateway, token: str, key: str) -> str:
    try:
        result = await gateway.charge(token, 1000, "USD", idempotency_key=key)
    except GatewayRetriableError:
        return "retriable"
    except GatewayOutcomeUnknown:
        return "unknown"
    return "succeeded" if result.succeeded else "failed"


async def test_no_faults_by_default() -> None:
    gateway = SandboxGateway(FrozenClock(NOW))
    token = await _token(gateway)
    assert {await _attempt(gateway, token, key) for key in KEYS[:200]} == {"succeeded"}


async def test_faults_hit_their_share_of_keys_and_the_same_key_always_alike() -> None:
    gateway = _sandbox(timeout_share=0.3, failure_share=0.1)
    token = await _token(gateway)
    outcomes = {key: await _attempt(gateway, token, key) for key in KEYS}
    counts = Counter(outcomes.values())
    assert 0.26 < counts["unknown"] / len(KEYS) < 0.34
    assert 0.07 < counts["retriable"] / len(KEYS) < 0.13
    assert counts["succeeded"] == len(KEYS) - counts["unknown"] - counts["retriable"]
    for key in KEYS[:300]:
        assert await _attempt(gateway, token, key) == outcomes[key]
    other_seed = _sandbox(timeout_share=0.3, failure_share=0.1, seed="another run")
    assert [await _attempt(other_seed, token, k) for k in KEYS[:300]] != [
        outcomes[k] for k in KEYS[:300]
    ]


async def test_lookup_tells_what_really_happened_to_each_key() -> None:
    gateway = _sandbox(timeout_share=0.3, failure_share=0.1, charged_on_timeout_share=0.5)
    token = await _token(gateway)
    truths: Counter[tuple[str, ChargeStatus]] = Counter()
    for key in KEYS:
        attempt = await _attempt(gateway, token, key)
        lookup = await gateway.lookup_charge(key, token=token, amount=1000, currency="USD")
        truths[attempt, lookup.status] += 1
        fate = gateway.faults.fate("charge", key)
        if attempt == "unknown":
            assert fate in (Fate.TIMEOUT_DONE, Fate.TIMEOUT_LOST)
            expected = (
                ChargeStatus.SUCCEEDED if fate == Fate.TIMEOUT_DONE else ChargeStatus.NOT_FOUND
            )
            assert lookup.status == expected
        if lookup.status == ChargeStatus.SUCCEEDED:
            # The charge the lookup found is the one a successful call would have made.
            result = lookup.result()
            assert result is not None and result.reference
            assert (
                result.reference
                == (
                    await SandboxGateway(FrozenClock(NOW)).charge(
                        token, 1000, "USD", idempotency_key=key
                    )
                ).reference
            )
    assert set(truths) == {
        ("succeeded", ChargeStatus.SUCCEEDED),
        ("unknown", ChargeStatus.SUCCEEDED),
        ("unknown", ChargeStatus.NOT_FOUND),
        ("retriable", ChargeStatus.NOT_FOUND),
    }
    timed_out = (
        truths["unknown", ChargeStatus.SUCCEEDED] + truths["unknown", ChargeStatus.NOT_FOUND]
    )
    assert 0.4 < truths["unknown", ChargeStatus.SUCCEEDED] / timed_out < 0.6


async def test_lookup_of_a_declined_card_says_failed() -> None:
    gateway = SandboxGateway(FrozenClock(NOW))
    token = await _token(gateway, "4000000000000341")
    lookup = await gateway.lookup_charge("pay_x", token=token, amount=100, currency="USD")
    assert (lookup.status, lookup.failure_code) == (ChargeStatus.FAILED, "card_declined")


async def test_faults_touch_refunds_only_when_told() -> None:
    charges_only = _sandbox(failure_share=1.0)
    assert (await charges_only.refund("ch_sandbox_a", 100, "USD", idempotency_key="re_1")).succeeded
    both = _sandbox(failure_share=1.0, operations=["charge", "refund"])
    with pytest.raises(GatewayRetriableError):
        await both.refund("ch_sandbox_a", 100, "USD", idempotency_key="re_1")


async def test_latency_and_a_slow_timeout() -> None:
    gateway = _sandbox(latency_seconds=0.05, timeout_share=1.0, timeout_after_seconds=0.05)
    token = await _token(gateway)
    started = time.monotonic()
    with pytest.raises(GatewayOutcomeUnknown) as unknown:
        await gateway.charge(token, 100, "USD", idempotency_key="pay_1")
    assert unknown.value.code == "timeout"
    assert time.monotonic() - started >= 0.1


async def test_a_tenant_sets_faults_in_its_sandbox_credentials() -> None:
    clock = FrozenClock(NOW)
    gateway = build_gateway("sandbox", {"faults": {"failure_share": 1.0}}, clock=clock)
    token = await gateway.tokenize(CardIn(number="4242424242424242", exp_month=1, exp_year=2040))
    with pytest.raises(GatewayRetriableError):
        await gateway.charge(token.token, 100, "USD", idempotency_key="pay_1")
    for bad in (
        {"faults": {"timeout_share": 0.8, "failure_share": 0.5}},
        {"faults": {"timeout_share": 2}},
        {"faults": {"explode": True}},
        {"faults": {"operations": ["tokenize"]}},
    ):
        with pytest.raises(GatewayConfigError) as invalid:
            build_gateway("sandbox", bad, clock=clock)
        assert invalid.value.code == "invalid_credentials"


async def test_sandbox_webhooks_are_signed_with_the_tenants_secret() -> None:
    clock = FrozenClock(NOW)
    gateway = build_gateway("sandbox", {"webhook_secret": "whsec_sandbox_1"}, clock=clock)
    headers, body = signed_webhook(
        "whsec_sandbox_1",
        "evt_1",
        WebhookKind.CHARGE_SUCCEEDED,
        NOW,
        charge_reference="ch_sandbox_abc",
        idempotency_key="pay_1",
        amount=1000,
        currency="USD",
    )
    event = gateway.parse_webhook(headers, body)
    assert (event.gateway, event.event_id, event.kind, event.idempotency_key, event.amount) == (
        "sandbox",
        "evt_1",
        WebhookKind.CHARGE_SUCCEEDED,
        "pay_1",
        1000,
    )
    assert event.occurred_at == NOW

    with pytest.raises(WebhookSignatureError):
        gateway.parse_webhook(headers, body.replace(b"1000", b"1001"))
    other = signed_webhook("whsec_other_1", "evt_1", WebhookKind.CHARGE_SUCCEEDED, NOW)
    with pytest.raises(WebhookSignatureError):
        gateway.parse_webhook(*other)
    with pytest.raises(WebhookSignatureError):
        gateway.parse_webhook({}, body)
    clock.set(NOW + timedelta(minutes=6))
    with pytest.raises(WebhookSignatureError) as stale:
        gateway.parse_webhook(headers, body)
    assert stale.value.code == "stale_signature"
    with pytest.raises(WebhookSignatureError) as unset:
        SandboxGateway(clock).parse_webhook(headers, body)
    assert unset.value.code == "no_webhook_secret"


def test_a_forged_signature_with_any_characters_is_refused_not_a_crash() -> None:
    clock = FrozenClock(NOW)
    gateway = build_gateway("sandbox", {"webhook_secret": "whsec_sandbox_1"}, clock=clock)
    headers, body = signed_webhook("whsec_sandbox_1", "evt_1", WebhookKind.CHARGE_SUCCEEDED, NOW)
    stamp = headers["Recur-Sandbox-Signature"].partition(",")[0]
    forged = {**headers, "Recur-Sandbox-Signature": f"{stamp},v1=é-not-hex"}
    with pytest.raises(WebhookSignatureError):
        gateway.parse_webhook(forged, body)
