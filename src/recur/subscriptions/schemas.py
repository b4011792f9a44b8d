"""The Subscription Manager's public types: catalog, subscriptions, test clocks."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field

from recur.subscriptions.periods import Interval

PricingModel = Literal["flat", "per_unit"]
SubscriptionStatus = Literal[
    "trialing", "active", "past_due", "paused", "canceled", "unpaid", "incomplete"
]
Metadata = dict[str, str]


class ProductCreate(BaseModel):
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


class PlanCreate(BaseModel):
    product_id: str = Field(max_length=64)
    nickname: str | None = Field(default=None, max_length=200)
    currency: str = Field(description="ISO 4217, e.g. USD")
    amount: int = Field(
        ge=0, strict=True, description="Minor units per period (per unit for per_unit)"
    )
    interval: Interval
    interval_count: int = Field(default=1, ge=1, le=365, strict=True)
    trial_days: int = Field(default=0, ge=0, le=730, strict=True)
    pricing_model: PricingModel = "flat"
    metadata: Metadata = Field(default_factory=dict, max_length=50)


class Plan(BaseModel):
    id: str
    object: Literal["plan"] = "plan"
    product_id: str
    nickname: str | None
    currency: str
    amount: int
    interval: Interval
    interval_count: int
    trial_days: int
    pricing_model: PricingModel
    active: bool
    metadata: Metadata
    created: datetime


class SubscriptionCreate(BaseModel):
    customer_id: str = Field(max_length=64)
    plan_id: str = Field(max_length=64)
    quantity: int = Field(default=1, ge=1, le=1_000_000, strict=True)
    trial_days: int | None = Field(
        default=None, ge=0, le=730, strict=True, description="Overrides the plan's trial"
    )
    metadata: Metadata = Field(default_factory=dict, max_length=50)


class SubscriptionCancel(BaseModel):
    at_period_end: bool = False


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
    latest_order_id: str | None
    test_clock_id: str | None
    metadata: Metadata
    created: datetime


class TestClockCreate(BaseModel):
    frozen_time: AwareDatetime
    name: str | None = Field(default=None, max_length=200)


class TestClockAdvance(BaseModel):
    frozen_time: AwareDatetime


class TestClock(BaseModel):
    __test__ = False  # not a pytest test class

    id: str
    object: Literal["test_clock"] = "test_clock"
    name: str | None
    frozen_time: datetime
    status: Literal["ready", "advancing"]
    created: datetime
