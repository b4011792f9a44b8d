"""Gateway adapters, and how one is built for a tenant.

`build_gateway` makes the adapter called `name` from a tenant's credentials for it (a plain dict,
as the tenant's gateway configuration keeps it) and the runtime's clock; `base_url` points a
real gateway elsewhere (the tests' local fakes). `gateway_for` is what payments calls today: the
sandbox, or an adapter from credentials it is handed.

| name      | credentials                                                                    |
|-----------|--------------------------------------------------------------------------------|
| `sandbox` | none; optional `faults` (see `sandbox_faults`) and `webhook_secret`            |
| `stripe`  | `api_key`; `webhook_secret` to receive webhooks                             |
| `adyen`   | `api_key`, `merchant_account`; `hmac_key` (hex) for webhooks; `live_url_prefix`|
|           | for the live platform; `webhook_username`/`webhook_password`; and the optional |
|           | `recurring_processing_model` and `verification_currency`                       |
| `manual`  | optional `instructions` shown to the customer                                  |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp

from recur.kit.clock import Clock
from recur.kit.errors import Conflict
from recur.payments.gateways.adyen import NAME as ADYEN
from recur.payments.gateways.adyen import AdyenGateway, AdyenSettings
from recur.payments.gateways.base import GatewayConfigError, PaymentGateway, read_settings
from recur.payments.gateways.manual import NAME as MANUAL
from recur.payments.gateways.manual import ManualGateway, ManualSettings, MarkLookup
from recur.payments.gateways.sandbox import NAME as SANDBOX
from recur.payments.gateways.sandbox import SandboxGateway, SandboxSettings
from recur.payments.gateways.stripe_gateway import NAME as STRIPE
from recur.payments.gateways.stripe_gateway import StripeGateway, StripeSettings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from recur.runtime import Runtime

DEFAULT_GATEWAY = SANDBOX
GATEWAYS = (SANDBOX, STRIPE, ADYEN, MANUAL)
_SETTINGS: dict[str, type[BaseModel]] = {
    SANDBOX: SandboxSettings,
    STRIPE: StripeSettings,
    ADYEN: AdyenSettings,
    MANUAL: ManualSettings,
}


def check_credentials(name: str, credentials: Mapping[str, Any]) -> None:
    """Raise GatewayConfigError unless `credentials` are well formed for the gateway `name`
    (whether the gateway accepts them is only known when it is called)."""
    model = _SETTINGS.get(name)
    if model is None:
        raise GatewayConfigError(
            "unknown_gateway", f"no gateway is called {name!r}: one of {', '.join(GATEWAYS)}"
        )
    read_settings(model, credentials, name)


def build_gateway(
    name: str,
    credentials: Mapping[str, Any],
    *,
    clock: Clock,
    base_url: str | None = None,
    session: aiohttp.ClientSession | None = None,
    timeout_seconds: float = 30.0,
    operator_marks: MarkLookup | None = None,
) -> PaymentGateway:
    """The adapter of gateway `name` for a tenant with these credentials.

    `session` is a shared aiohttp session for the HTTP gateways (the adapter opens its own
    otherwise, closed by `aclose`); `timeout_seconds` bounds each call to them.
    `operator_marks` reads operators' marks on manual payments (see `manual`).
    Raises GatewayConfigError for an unknown name or malformed credentials.
    """
    check_credentials(name, credentials)
    if name == SANDBOX:
        return SandboxGateway.from_credentials(clock, credentials)
    if name == STRIPE:
        return StripeGateway.from_credentials(
            clock, credentials, base_url=base_url, session=session, timeout_seconds=timeout_seconds
        )
    if name == ADYEN:
        return AdyenGateway.from_credentials(
            clock, credentials, base_url=base_url, session=session, timeout_seconds=timeout_seconds
        )
    assert name == MANUAL
    return ManualGateway.from_credentials(clock, credentials, operator_marks)


def gateway_for(
    rt: Runtime, name: str = DEFAULT_GATEWAY, credentials: Mapping[str, Any] | None = None
) -> PaymentGateway:
    """The adapter of the gateway called `name` (the one a payment method or payment used):
    the sandbox as it is by default, or the gateway built from the tenant's `credentials`
    (whose HTTP session the caller closes with `aclose`)."""
    if credentials is None and name == SANDBOX:
        return SandboxGateway(rt.clock)
    if credentials is None or name not in GATEWAYS:
        raise Conflict(
            f"the payment gateway {name!r} is not configured", code="gateway_unavailable"
        )
    return build_gateway(name, credentials, clock=rt.clock)
