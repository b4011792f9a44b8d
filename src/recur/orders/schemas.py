"""The Order Processing Service's public types: its API and its client speak these."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, PlainSerializer

from recur.kit.bodies import RequestBody

OrderStatus = Literal["draft", "open", "paid", "void", "uncollectible"]
LineKind = Literal["subscription", "one_off"]
# An exact percentage; a number in JSON, as Stripe's API gives it.
Percentage = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class OrderLineIn(RequestBody):
    description: str = Field(min_length=1, max_length=500)
    unit_amount: int = Field(ge=0, strict=True, description="Minor units, e.g. cents")
    quantity: int = Field(default=1, ge=1, le=1_000_000, strict=True)


class OrderCreate(RequestBody):
    customer_id: str = Field(max_length=64)
    currency: str | None = Field(
        default=None, description="ISO 4217; defaults to, and must match, the customer's"
    )
    lines: list[OrderLineIn] = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    auto_finalize: bool = Field(default=True, description="Finalize (number it) at once")
    coupon_id: str | None = Field(default=None, max_length=64, description="A coupon to apply")


class OrderLineDraft(BaseModel):
    """A line computed by the billing engine."""

    description: str
    unit_amount: int
    quantity: int
    period_start: datetime | None = None
    period_end: datetime | None = None


class DiscountTerms(BaseModel):
    """A coupon's terms, to take off an order's subtotal: percent_off or amount_off."""

    coupon_id: str
    name: str | None = None
    percent_off: Percentage | None = None
    amount_off: int | None = Field(default=None, description="In the order's currency")


class OrderTaxRate(BaseModel):
    """A tax rate to apply to an order."""

    tax_rate_id: str
    display_name: str
    percentage: Percentage
    inclusive: bool


class SubscriptionOrderDraft(BaseModel):
    """What the billing engine asks to be ordered for one subscription period."""

    customer_id: str
    subscription_id: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: list[OrderLineDraft]
    description: str | None = None
    discount: DiscountTerms | None = Field(
        default=None, description="The subscription's coupon, when it applies to this period"
    )
    tax_rates: list[OrderTaxRate] = Field(default_factory=list)


class OrderLine(BaseModel):
    id: str
    kind: LineKind
    description: str
    quantity: int
    unit_amount: int
    amount: int
    currency: str
    period_start: datetime | None
    period_end: datetime | None


class OrderDiscount(BaseModel):
    coupon_id: str
    name: str | None
    amount: int = Field(description="Taken off the subtotal, minor units")


class OrderTaxAmount(OrderTaxRate):
    amount: int = Field(description="Tax at this rate, minor units")


class Order(BaseModel):
    id: str
    object: Literal["order"] = "order"
    number: int | None
    customer_id: str
    subscription_id: str | None
    status: OrderStatus
    currency: str
    lines: list[OrderLine]
    subtotal: int
    discount: OrderDiscount | None = None
    tax: int = Field(default=0, description="All tax, included in prices or added")
    tax_amounts: list[OrderTaxAmount] = Field(default_factory=list)
    total_excluding_tax: int
    total: int = Field(description="subtotal - discount + tax not included in prices")
    amount_paid: int
    credit_applied: int = Field(default=0, description="Paid from the customer's credit balance")
    amount_due: int
    period_start: datetime | None
    period_end: datetime | None
    description: str | None
    created: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None = None
    marked_uncollectible_at: datetime | None = None
