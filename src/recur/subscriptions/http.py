"""The subscriptions client of the distributed mode: the same calls, over HTTP to the
Subscription Manager's internal endpoints (see `internal_api.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import TypeAdapter

from recur.kit.service_client import ServiceClient
from recur.subscriptions.schemas import Coupon, Subscription, TaxRate, TestClock

_TEST_CLOCK = TypeAdapter(TestClock)
_SUBSCRIPTION = TypeAdapter(Subscription)
_COUPON = TypeAdapter(Coupon)
_TAX_RATES = TypeAdapter(list[TaxRate])
_NOTHING = TypeAdapter(None)

# Calls safe to send again when an instance may have got one and died before answering: reads,
# and coupon uses, counted once per redeemer and given back once.
IDEMPOTENT_CALLS = frozenset(
    {"get-test-clock", "get-subscription", "redeem-coupon", "release-coupon", "get-tax-rates"}
)


class HttpSubscriptionsClient:
    def __init__(self, upstream: ServiceClient):
        self._call = upstream.call

    async def get_test_clock(self, tenant_id: str, test_clock_id: str) -> TestClock:
        body = {"tenant_id": tenant_id, "test_clock_id": test_clock_id}
        return await self._call("get-test-clock", body, _TEST_CLOCK)

    async def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription:
        body = {"tenant_id": tenant_id, "subscription_id": subscription_id}
        return await self._call("get-subscription", body, _SUBSCRIPTION)

    async def redeem_coupon(
        self, tenant_id: str, coupon_id: str, currency: str, at: datetime, redeemed_by: str
    ) -> Coupon:
        body = {
            "tenant_id": tenant_id,
            "coupon_id": coupon_id,
            "currency": currency,
            "at": at,
            "redeemed_by": redeemed_by,
        }
        return await self._call("redeem-coupon", body, _COUPON)

    async def release_coupon(self, tenant_id: str, coupon_id: str, redeemed_by: str) -> None:
        body = {"tenant_id": tenant_id, "coupon_id": coupon_id, "redeemed_by": redeemed_by}
        await self._call("release-coupon", body, _NOTHING)

    async def get_tax_rates(self, tenant_id: str, tax_rate_ids: Sequence[str]) -> list[TaxRate]:
        body = {"tenant_id": tenant_id, "tax_rate_ids": list(tax_rate_ids)}
        return await self._call("get-tax-rates", body, _TAX_RATES)
