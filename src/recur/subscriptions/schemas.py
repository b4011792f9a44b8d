"""The Subscription Manager's public types: catalog, subscriptions, test clocks."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, PlainSerializer, model_validator

from recur.kit.bodies import RequestBody
from recur.kit.money import MAX_MINOR
from recur.subscriptions.periods import Interval

PricingModel = Literal["flat", "per_unit", "tiered_graduated", "tiered_volume", "package"]
SubscriptionStatus = Literal[
    "trialing", "active", "past_due", "paused", "canceled", "unpaid", "incomplete"
]
Metadata = dict[str, str]
# An exact percentage; a number in JSON, as Stripe's API gives it.
Percentage = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
CouponDuration = Literal["once", "repeating", "forever"]


class ProductCreate(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    metadata: Metadata = Field(default_factory=dict, max_length=50)


class Product(BaseModel):
    id: str
    object: Literal["product"] = "product"
    name: str
    description: str | None
    active: bool
    metadata: Metadata
    created: datetime


class Tier(RequestBody):
    """One price tier: units from the previous tier's `up_to` + 1 to this `up_to` inclusive."""

    up_to: int | None = Field(
        ge=1, le=MAX_MINOR, strict=True, description="The tier's last unit; null for the last tier"
    )
    unit_amount: int = Field(ge=0, le=MAX_MINOR, strict=True, description="Minor units per unit")
    flat_amount: int = Field(
        default=0, ge=0, le=MAX_MINOR, strict=True, description="Added once when the tier is used"
    )


class PlanCreate(RequestBody):
    product_id: str = Field(max_length=64)
    nickname: str | None = Field(default=None, max_length=200)
    currency: str = Field(description="ISO 4217, e.g. USD")
    amount: int | None = Field(
        default=None,
        ge=0,
        le=MAX_MINOR,
        strict=True,
        description="Minor units per period (per unit for per_unit, per package for package); "
        "required except for tiered models, which price with `tiers`",
    )
    interval: Interval
    interval_count: int = Field(default=1, ge=1, le=365, strict=True)
    trial_days: int = Field(default=0, ge=0, le=730, strict=True)
    pricing_model: PricingModel = "flat"
    tiers: list[Tier] | None = Field(
        default=None,
        max_length=100,
        description="Required for tiered_graduated and tiered_volume, in increasing up_to",
    )
    package_size: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        strict=True,
        description="Units per package; required for package",
    )
    metadata: Metadata = Field(default_factory=dict, max_length=50)


class Plan(BaseModel):
    id: str
    object: Literal["plan"] = "plan"
    product_id: str
    nickname: str | None
    currency: str
    amount: int | None
    interval: Interval
    interval_count: int
    trial_days: int
    pricing_model: PricingModel
    tiers: list[Tier] | None
    package_size: int | None
    active: bool
    metadata: Metadata
    created: datetime


class SubscriptionCreate(RequestBody):
    customer_id: str = Field(max_length=64)
    plan_id: str = Field(max_length=64)
    quantity: int = Field(default=1, ge=1, le=1_000_000, strict=True)
    trial_days: int | None = Field(
        default=None, ge=0, le=730, strict=True, description="Overrides the plan's trial"
    )
    coupon_id: str | None = Field(default=None, max_length=64, description="A coupon to apply")
    metadata: Metadata = Field(default_factory=dict, max_length=50)


class SubscriptionCancel(RequestBody):
    at_period_end: bool = False
    prorate: bool = Field(
        default=False,
        description=(
            "Ending now: credit the unused time of the paid period and bill the prorations of "
            "changes not yet billed, at once; without it, those prorations are dropped"
        ),
    )


ProrationBehavior = Literal["create_prorations", "always_invoice", "none"]
ChangeEffective = Literal["immediately", "period_end"]


class SubscriptionChange(RequestBody):
    plan_id: str | None = Field(
        default=None,
        max_length=64,
        description="The new plan: same currency and billing interval as the current one",
    )
    quantity: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    proration_behavior: ProrationBehavior = Field(
        default="create_prorations",
        description="create_prorations: credit the unused time and charge the rest of the "
        "period at the new price on the next renewal order; always_invoice: order and charge "
        "them now; none: no proration",
    )
    effective: ChangeEffective = Field(
        default="immediately",
        description="period_end: schedule the change for the end of the current period "
        "(no proration), replacing any change scheduled before",
    )


class PendingChange(BaseModel):
    plan_id: str
    quantity: int
    effective_at: datetime | None = Field(
        default=None, description="When it applies: the end of the current period"
    )


class ChangePreviewLine(BaseModel):
    description: str
    amount: int = Field(description="Minor units; credits are negative")
    period_start: datetime
    period_end: datetime


class ChangePreview(BaseModel):
    object: Literal["subscription_change_preview"] = "subscription_change_preview"
    subscription_id: str
    plan_id: str
    quantity: int
    proration_behavior: ProrationBehavior
    effective: ChangeEffective
    proration_date: datetime = Field(description="The instant the change is prorated at")
    currency: str
    lines: list[ChangePreviewLine]
    total: int = Field(description="The sum of the lines, before discount and tax")


class Subscription(BaseModel):
    id: str
    object: Literal["subscription"] = "subscription"
    customer_id: str
    plan_id: str
    quantity: int
    status: SubscriptionStatus
    currency: str
    billing_cycle_anchor: datetime
    current_period_start: datetime
    current_period_end: datetime
    trial_start: datetime | None
    trial_end: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    paused_at: datetime | None
    latest_order_id: str | None
    test_clock_id: str | None
    coupon_id: str | None = None
    discount_start: datetime | None = Field(
        default=None, description="When the coupon was applied; its duration counts from there"
    )
    pending_change: PendingChange | None = Field(
        default=None, description="A change scheduled for the end of the current period"
    )
    metadata: Metadata
    created: datetime

    @model_validator(mode="after")
    def _pending_change_applies_at_period_end(self) -> Subscription:
        if self.pending_change is not None:
            self.pending_change.effective_at = self.current_period_end
        return self


class TestClockCreate(RequestBody):
    frozen_time: AwareDatetime
    name: str | None = Field(default=None, max_length=200)


class TestClockAdvance(RequestBody):
    frozen_time: AwareDatetime


class TestClock(BaseModel):
    __test__ = False  # not a pytest test class

    id: str
    object: Literal["test_clock"] = "test_clock"
    name: str | None
    frozen_time: datetime
    status: Literal["ready", "advancing"]
    created: datetime


class CouponCreate(RequestBody):
    name: str | None = Field(default=None, max_length=200)
    percent_off: Percentage | None = Field(
        default=None, gt=0, le=100, decimal_places=2, description="Or amount_off"
    )
    amount_off: int | None = Field(
        default=None, ge=1, le=MAX_MINOR, strict=True, description="Minor units; or percent_off"
    )
    currency: str | None = Field(default=None, description="ISO 4217; required with amount_off")
    duration: CouponDuration = Field(
        default="once",
        description="once: the first order; repeating: orders of periods starting within "
        "duration_in_months of the coupon being applied; forever: every order",
    )
    duration_in_months: int | None = Field(
        default=None, ge=1, le=1200, strict=True, description="Required with repeating"
    )
    max_redemptions: int | None = Field(default=None, ge=1, le=2**31 - 1, strict=True)
    redeem_by: AwareDatetime | None = Field(
        default=None, description="No redemption after this time (the customer's clock's)"
    )
    metadata: Metadata = Field(default_factory=dict, max_length=50)


class Coupon(BaseModel):
    id: str
    object: Literal["coupon"] = "coupon"
    name: str | None
    percent_off: Percentage | None
    amount_off: int | None
    currency: str | None
    duration: CouponDuration
    duration_in_months: int | None
    max_redemptions: int | None
    redeem_by: datetime | None
    times_redeemed: int
    metadata: Metadata
    created: datetime


class TaxRateCreate(RequestBody):
    display_name: str = Field(min_length=1, max_length=100, description="e.g. VAT, Sales tax")
    percentage: Percentage = Field(ge=0, le=100, decimal_places=4)
    inclusive: bool = Field(description="Whether the tax is included in the prices")
    country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"
    )
    description: str | None = Field(default=None, max_length=500)
    metadata: Metadata = Field(default_factory=dict, max_length=50)


class TaxRate(BaseModel):
    id: str
    object: Literal["tax_rate"] = "tax_rate"
    display_name: str
    percentage: Percentage
    inclusive: bool
    country: str | None
    description: str | None
    metadata: Metadata
    created: datetime
