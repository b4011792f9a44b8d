"""How other services talk to the Subscription Manager Service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from recur.subscriptions.schemas import Coupon, Subscription, TaxRate, TestClock


class SubscriptionsClient(Protocol):
    async def get_test_clock(self, tenant_id: str, test_clock_id: str) -> TestClock:
        """The test clock; NotFound when it is not this tenant's."""
        ...

    async def get_subscription(self, tenant_id: str, subscription_id: str) -> Subscription:
        """The subscription; NotFound when it is not this tenant's."""
        ...

    async def redeem_coupon(
        self, tenant_id: str, coupon_id: str, currency: str, at: datetime, redeemed_by: str
    ) -> Coupon:
        """Apply the coupon to `redeemed_by` (a one-off order's id) in `currency`, as of `at`
        (the customer's time): one use counted, once per redeemer. NotFound (param
        `coupon_id`); InvalidRequest when it is past `redeem_by`, used up, or in another
        currency (code `currency_mismatch`)."""
        ...

    async def release_coupon(self, tenant_id: str, coupon_id: str, redeemed_by: str) -> None:
        """Give back the use counted for `redeemed_by`, whose order was never made."""
        ...

    async def get_tax_rates(self, tenant_id: str, tax_rate_ids: Sequence[str]) -> list[TaxRate]:
        """The tax rates, in the order asked; NotFound (param `tax_rate_ids`) for any that
        is not the tenant's."""
        ...
