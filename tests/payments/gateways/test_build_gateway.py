"""Building an adapter from a tenant's credentials; `gateway_for` as payments calls it today."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from recur.kit.clock import FrozenClock
from recur.kit.errors import Conflict
from recur.payments.gateways import build_gateway, check_credentials, gateway_for
from recur.payments.gateways.adyen import AdyenGateway
from recur.payments.gateways.base import GatewayConfigError
from recur.payments.gateways.manual import ManualGateway
from recur.payments.gateways.sandbox import SandboxGateway
from recur.payments.gateways.stripe_gateway import StripeGateway

CLOCK = FrozenClock(datetime(2030, 6, 15, tzinfo=UTC))
ADYEN = {"api_key": "AQE_key_12345", "merchant_account": "RecurECOM"}


@pytest.mark.parametrize(
    ("name", "credentials", "kind"),
    [
        ("sandbox", {}, SandboxGateway),
        ("stripe", {"api_key": "sk_test_123456"}, StripeGateway),
        ("stripe", {"api_key": "rk_live_123456", "webhook_secret": "whsec_1234"}, StripeGateway),
        ("adyen", ADYEN, AdyenGateway),
        (
            "adyen",
            {**ADYEN, "hmac_key": "AB" * 32, "live_url_prefix": "1797a841fbb37ca7-acme"},
            AdyenGateway,
        ),
        ("manual", {}, ManualGateway),
    ],
)
async def test_each_gateway_is_built_from_its_credentials(
    name: str, credentials: dict[str, Any], kind: type
) -> None:
    gateway = build_gateway(name, credentials, clock=CLOCK)
    assert isinstance(gateway, kind) and gateway.name == name
    await gateway.aclose()


@pytest.mark.parametrize(
    ("name", "credentials", "param"),
    [
        ("stripe", {}, "api_key"),
        ("stripe", {"api_key": "pk_live_notsecret"}, "api_key"),
        ("stripe", {"api_key": "sk_test_123456", "other": 1}, "other"),
        ("adyen", {"api_key": "AQE_key_12345"}, "merchant_account"),
        ("adyen", {**ADYEN, "hmac_key": "not hex at all, not hex"}, "hmac_key"),
        ("adyen", {**ADYEN, "verification_currency": "usd"}, "verification_currency"),
        ("adyen", {**ADYEN, "live_url_prefix": "x.evil.example/"}, "live_url_prefix"),
        ("manual", {"instructions": ""}, "instructions"),
    ],
)
def test_malformed_credentials_name_the_field_and_never_echo_it(
    name: str, credentials: dict[str, Any], param: str
) -> None:
    with pytest.raises(GatewayConfigError) as invalid:
        build_gateway(name, credentials, clock=CLOCK)
    assert (invalid.value.code, invalid.value.param) == ("invalid_credentials", param)
    for value in credentials.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(invalid.value)
    with pytest.raises(GatewayConfigError):
        check_credentials(name, credentials)


def test_an_unknown_gateway_is_a_config_error() -> None:
    with pytest.raises(GatewayConfigError) as unknown:
        build_gateway("paypal", {}, clock=CLOCK)
    assert unknown.value.code == "unknown_gateway"


async def test_gateway_for_keeps_serving_the_sandbox() -> None:
    rt: Any = SimpleNamespace(clock=CLOCK)
    assert isinstance(gateway_for(rt), SandboxGateway)
    assert isinstance(gateway_for(rt, "sandbox"), SandboxGateway)
    with pytest.raises(Conflict) as unconfigured:
        gateway_for(rt, "stripe")
    assert unconfigured.value.code == "gateway_unavailable"
    with pytest.raises(Conflict):
        gateway_for(rt, "paypal", {})
    stripe = gateway_for(rt, "stripe", {"api_key": "sk_test_123456"})
    assert isinstance(stripe, StripeGateway)
    await stripe.aclose()
