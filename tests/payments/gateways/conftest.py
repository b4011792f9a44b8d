"""The gateway adapters against local fakes of their gateways, served on loopback.

The fakes live in `tests/payments/fakes/`, loaded here as the package `payment_gateway_fakes`
(the test tree has no packages to import them from).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recur.kit.clock import FrozenClock
from recur.payments.gateways import build_gateway
from recur.payments.gateways.base import PaymentGateway

FAKES = "payment_gateway_fakes"
if FAKES not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        FAKES,
        Path(__file__).resolve().parents[1] / "fakes" / "__init__.py",
        submodule_search_locations=[str(Path(__file__).resolve().parents[1] / "fakes")],
    )
    assert _spec is not None
    sys.modules[FAKES] = importlib.util.module_from_spec(_spec)

StripeFake: Any = importlib.import_module(f"{FAKES}.stripe_fake").StripeFake
AdyenFake: Any = importlib.import_module(f"{FAKES}.adyen_fake").AdyenFake

NOW = datetime(2030, 6, 15, 12, 0, tzinfo=UTC)
# Calls that should answer get all the time a loaded machine needs; the `impatient_` adapters
# give up quickly, for the calls a stalled fake is meant to time out.
TIMEOUT = 10.0
IMPATIENT = 0.3
STRIPE_WEBHOOK_SECRET = "whsec_test_fake_secret"  # as the tests have it too
ADYEN_HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(NOW)


@pytest.fixture
async def stripe_fake(clock: FrozenClock) -> AsyncIterator[Any]:
    async with StripeFake(clock).running() as fake:
        yield fake


@pytest.fixture
async def adyen_fake(clock: FrozenClock) -> AsyncIterator[Any]:
    async with AdyenFake(clock).running() as fake:
        yield fake


def _stripe(fake: Any, clock: FrozenClock, timeout: float) -> PaymentGateway:
    credentials = {"api_key": fake.api_key, "webhook_secret": STRIPE_WEBHOOK_SECRET}
    return build_gateway(
        "stripe", credentials, clock=clock, base_url=fake.url, timeout_seconds=timeout
    )


def _adyen(fake: Any, clock: FrozenClock, timeout: float) -> PaymentGateway:
    credentials = {
        "api_key": fake.api_key,
        "merchant_account": fake.merchant_account,
        "hmac_key": ADYEN_HMAC_KEY,
    }
    return build_gateway(
        "adyen", credentials, clock=clock, base_url=fake.url, timeout_seconds=timeout
    )


@pytest.fixture
async def stripe(stripe_fake: Any, clock: FrozenClock) -> AsyncIterator[PaymentGateway]:
    gateway = _stripe(stripe_fake, clock, TIMEOUT)
    yield gateway
    await gateway.aclose()


@pytest.fixture
async def impatient_stripe(stripe_fake: Any, clock: FrozenClock) -> AsyncIterator[PaymentGateway]:
    gateway = _stripe(stripe_fake, clock, IMPATIENT)
    yield gateway
    await gateway.aclose()


@pytest.fixture
async def adyen(adyen_fake: Any, clock: FrozenClock) -> AsyncIterator[PaymentGateway]:
    gateway = _adyen(adyen_fake, clock, TIMEOUT)
    yield gateway
    await gateway.aclose()


@pytest.fixture
async def impatient_adyen(adyen_fake: Any, clock: FrozenClock) -> AsyncIterator[PaymentGateway]:
    gateway = _adyen(adyen_fake, clock, IMPATIENT)
    yield gateway
    await gateway.aclose()
