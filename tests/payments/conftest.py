"""Factories for the payment tests: customers, cards and orders made through the public API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from recur.settings import Settings

MakeCustomer = Callable[..., Awaitable[dict[str, Any]]]
Attach = Callable[..., Awaitable[httpx.Response]]
MakeOrder = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_customer(api: httpx.AsyncClient) -> MakeCustomer:
    """Create a customer (in USD unless told otherwise; as `api` unless another client is given)."""

    async def make(client: httpx.AsyncClient | None = None, **body: Any) -> dict[str, Any]:
        body.setdefault("currency", "USD")
        response = await (client or api).post("/v1/customers", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    return make


@pytest.fixture
def attach(api: httpx.AsyncClient) -> Attach:
    """Attach a card to a customer; returns the raw response."""

    async def attach(
        customer_id: str,
        number: str = "4242424242424242",
        client: httpx.AsyncClient | None = None,
        exp_month: int = 12,
        exp_year: int = 2040,
        **body: Any,
    ) -> httpx.Response:
        card = {"number": number, "exp_month": exp_month, "exp_year": exp_year, "cvc": "123"}
        return await (client or api).post(
            f"/v1/customers/{customer_id}/payment-methods", json={"card": card, **body}
        )

    return attach


@pytest.fixture
def make_order(api: httpx.AsyncClient) -> MakeOrder:
    """An open (finalized) order of one line for the customer."""

    async def make(
        customer_id: str, unit_amount: int = 1000, client: httpx.AsyncClient | None = None
    ) -> dict[str, Any]:
        response = await (client or api).post(
            "/v1/orders",
            json={
                "customer_id": customer_id,
                "lines": [{"description": "x", "unit_amount": unit_amount, "quantity": 1}],
            },
        )
        assert response.status_code == 200, response.text
        return response.json()

    return make


# Gateway fakes served on loopback for tests through the API (webhooks, refunds, disputes): the
# tenant's adapters, built from its credentials, reach them instead of the real gateways.

_FAKES = "payment_gateway_fakes"


def _fakes_module(name: str) -> Any:
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    folder = Path(__file__).resolve().parent / "fakes"
    if _FAKES not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _FAKES, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert spec is not None
        sys.modules[_FAKES] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"{_FAKES}.{name}")


@pytest.fixture
async def stripe_server(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from recur.payments.gateways import stripe_gateway

    async with _fakes_module("stripe_fake").StripeFake(runtime.clock).running() as fake:
        monkeypatch.setattr(stripe_gateway, "API_BASE", fake.url)
        yield fake


@pytest.fixture
async def adyen_server(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from recur.payments.gateways import adyen

    async with _fakes_module("adyen_fake").AdyenFake(runtime.clock).running() as fake:
        monkeypatch.setattr(adyen, "TEST_BASE", fake.url)
        yield fake


STRIPE_WEBHOOK_SECRET = "whsec_recur_tenant_secret"
ADYEN_HMAC_KEY = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"


class GatewayPayments:
    """Payments at a gateway, made without the charge path: a pending row (as a charge whose
    outcome is not known yet leaves it), settled by what a test sends."""

    def __init__(self, runtime: Any, app: Any):
        self.runtime = runtime
        self.app = app

    async def configure(self, client: httpx.AsyncClient, name: str, **credentials: Any) -> None:
        response = await client.post(
            "/v1/gateways", json={"name": name, "credentials": credentials}
        )
        assert response.status_code == 200, response.text

    async def pending(
        self,
        tenant_id: str,
        customer_id: str,
        gateway: str,
        amount: int = 1000,
        currency: str = "USD",
        *,
        attempt_key: str | None = None,
    ) -> str:
        """A pending payment; with `attempt_key`, charged by an attempt of unknown outcome."""
        from recur.kit.ids import new_id
        from recur.payments import repository
        from recur.payments.tables import payment_attempts

        now = self.runtime.clock.now()
        payment_id = new_id("pay")
        async with self.runtime.uow() as uow:
            await repository.insert_payment(
                uow,
                {
                    "id": payment_id,
                    "tenant_id": tenant_id,
                    "customer_id": customer_id,
                    "amount": amount,
                    "currency": currency,
                    "status": "pending",
                    "amount_refunded": 0,
                    "gateway": gateway,
                    "created": now,
                    "updated": now,
                },
            )
            if attempt_key is not None:
                await uow.execute(
                    sa.insert(payment_attempts).values(
                        id=new_id("att"),
                        tenant_id=tenant_id,
                        payment_id=payment_id,
                        number=1,
                        gateway=gateway,
                        idempotency_key=attempt_key,
                        outcome="unknown",
                        created=now,
                    )
                )
            await uow.commit()
        return payment_id

    async def succeeded(
        self, tenant_id: str, customer_id: str, gateway: str, reference: str, amount: int = 1000
    ) -> str:
        """A payment the gateway took, settled as its answer settles one."""
        from recur.payments import batch
        from recur.payments.gateways.base import ChargeResult

        payment_id = await self.pending(tenant_id, customer_id, gateway, amount)
        settled = await batch.settle(
            self.runtime, tenant_id, {payment_id: ChargeResult(True, reference)}
        )
        assert settled[payment_id].status == "succeeded"
        return payment_id

    def anonymous(self) -> httpx.AsyncClient:
        """A client with no API key, as a gateway posting a webhook is."""
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://recur.test"
        )


@pytest.fixture
def gateway_payments(runtime: Any, app: Any) -> GatewayPayments:
    return GatewayPayments(runtime, app)


@pytest.fixture
def settings(database_url: str) -> Settings:
    """As the root conftest's, with a key for the tenants' gateway credentials, so tests can
    configure Stripe and Adyen (a file needing other settings defines its own)."""
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        gateway_credentials_key=Fernet.generate_key().decode(),
    )
