"""Internal endpoints of the Subscription Manager: its client's calls, over HTTP.

Reached only by other Recur services holding the internal token (see kit/service_client.py);
never part of the public API or its documentation.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import AwareDatetime, Field

from recur.kit.http import RuntimeDep
from recur.kit.service_client import ObjectId, TenantScoped
from recur.subscriptions.local import LocalSubscriptionsClient
from recur.subscriptions.schemas import Coupon, Subscription, TaxRate, TestClock

router = APIRouter(prefix="/internal/subscriptions", include_in_schema=False)


class TestClockRef(TenantScoped):
    __test__ = False  # not a pytest test class

    test_clock_id: ObjectId


class SubscriptionRef(TenantScoped):
    subscription_id: ObjectId


class CouponRedemption(TenantScoped):
    coupon_id: ObjectId
    currency: str = Field(min_length=1, max_length=8)
    at: AwareDatetime
    redeemed_by: ObjectId


class CouponRelease(TenantScoped):
    coupon_id: ObjectId
    redeemed_by: ObjectId


class TaxRateIds(TenantScoped):
    tax_rate_ids: list[ObjectId] = Field(max_length=1_000)


def _subscriptions(rt: RuntimeDep) -> LocalSubscriptionsClient:
    # This process is the subscriptions service: its calls run here, whatever the settings say.
    return LocalSubscriptionsClient(rt)


@router.post("/get-test-clock", response_model=TestClock)
async def get_test_clock(body: TestClockRef, rt: RuntimeDep) -> TestClock:
    return await _subscriptions(rt).get_test_clock(body.tenant_id, body.test_clock_id)


@router.post("/get-subscription", response_model=Subscription)
async def get_subscription(body: SubscriptionRef, rt: RuntimeDep) -> Subscription:
    return await _subscriptions(rt).get_subscription(body.tenant_id, body.subscription_id)


@router.post("/redeem-coupon", response_model=Coupon)
async def redeem_coupon(body: CouponRedemption, rt: RuntimeDep) -> Coupon:
    return await _subscriptions(rt).redeem_coupon(
        body.tenant_id, body.coupon_id, body.currency, body.at, body.redeemed_by
    )


@router.post("/release-coupon", response_model=None)
async def release_coupon(body: CouponRelease, rt: RuntimeDep) -> None:
    await _subscriptions(rt).release_coupon(body.tenant_id, body.coupon_id, body.redeemed_by)


@router.post("/get-tax-rates", response_model=list[TaxRate])
async def get_tax_rates(body: TaxRateIds, rt: RuntimeDep) -> list[TaxRate]:
    return await _subscriptions(rt).get_tax_rates(body.tenant_id, body.tax_rate_ids)
