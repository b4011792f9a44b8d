"""The subscriptions client of the embedded mode: the same calls, run in this process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from recur.subscriptions import coupons, service, tax_rates, test_clocks
from recur.subscriptions.schemas import Coupon, Subscription, TaxRate, TestClock

if TYPE_CHECKING:
    from recur.runtime import Runtime


class LocalSubscriptionsClient:
    def __init__(self, runtime: Runtime):
        self._rt = runtime

    async def get_test_clock(self, tenant_id: str, test_clock_id: str) -> TestClock:
        return await test_clocks.get_test_clock(self._rt, tenant_id, test_clock_id)

    async def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription:
        return await service.get_subscription(self._rt, tenant_id, subscription_id)

    async def redeem_coupon(
        self, tenant_id: str, coupon_id: str, currency: str, at: datetime, redeemed_by: str
    ) -> Coupon:
        return await coupons.redeem_coupon(
            self._rt, tenant_id, coupon_id, currency, at, redeemed_by
        )

    async def release_coupon(self, tenant_id: str, coupon_id: str, redeemed_by: str) -> None:
        await coupons.release_coupon(self._rt, tenant_id, coupon_id, redeemed_by)

    async def get_tax_rates(self, tenant_id: str, tax_rate_ids: Sequence[str]) -> list[TaxRate]:
        return await tax_rates.get_tax_rates(self._rt, tenant_id, tax_rate_ids)
