"""The Order Processing Service's public types: its API and its client speak these."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

OrderStatus = Literal["draft", "open", "paid", "void", "uncollectible"]
LineKind = Literal["subscription", "one_off"]


class OrderLineIn(BaseModel):
    description: str = Field(min_length=1, max_length=500)
    unit_amount: int = Field(ge=0, strict=True, description="Minor units, e.g. cents")
    quantity: int = Field(default=1, ge=1, le=1_000_000, strict=True)


class OrderCreate(BaseModel):
    customer_id: str = Field(max_length=64)
    currency: str | None = Field(
        default=None, description="ISO 4217; defaults to, and must match, the customer's"
    )
    lines: list[OrderLineIn] = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)
    auto_finalize: bool = Field(default=True, description="Finalize (number it) at once")


class OrderLineDraft(BaseModel):
    """A line computed by the billing engine."""

    description: str
    unit_amount: int
    quantity: int
    period_start: datetime | None = None
    period_end: datetime | None = None


class SubscriptionOrderDraft(BaseModel):
    """What the billing engine asks to be ordered for one subscription period."""

    customer_id: str
    subscription_id: str
    currency: str
    period_start: datetime
    period_end: datetime
    lines: list[OrderLineDraft]
    description: str | None = None


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
    total: int
    amount_paid: int
    amount_due: int
    period_start: datetime | None
    period_end: datetime | None
    description: str | None
    created: datetime
    finalized_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None = None
    marked_uncollectible_at: datetime | None = None
