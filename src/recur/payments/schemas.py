"""The Payment Gateway Service's public types: its API and its client speak these."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

PaymentStatus = Literal["pending", "succeeded", "failed"]


class CardIn(BaseModel):
    """Card details as the customer typed them. Tokenized at once, never stored or logged."""

    number: str = Field(min_length=12, max_length=23, repr=False)
    exp_month: int = Field(ge=1, le=12, strict=True)
    exp_year: int = Field(ge=2000, le=2200, strict=True)
    cvc: str | None = Field(default=None, min_length=3, max_length=4, repr=False)


class PaymentMethodCreate(BaseModel):
    card: CardIn
    set_default: bool = Field(default=False, description="Make it the customer's default")


class CardDetails(BaseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class PaymentMethod(BaseModel):
    id: str
    object: Literal["payment_method"] = "payment_method"
    customer_id: str
    type: Literal["card"] = "card"
    gateway: str
    card: CardDetails
    created: datetime


class PaymentCreate(BaseModel):
    order_id: str | None = Field(default=None, max_length=64)
    customer_id: str | None = Field(default=None, max_length=64)
    amount: int | None = Field(default=None, gt=0, strict=True, description="Minor units")
    currency: str | None = None
    payment_method_id: str | None = Field(default=None, max_length=64)
    card: CardIn | None = Field(default=None, description="Charge a card once without saving it")
    description: str | None = Field(default=None, max_length=500)


class Payment(BaseModel):
    id: str
    object: Literal["payment"] = "payment"
    customer_id: str
    order_id: str | None
    amount: int
    currency: str
    status: PaymentStatus
    failure_code: str | None
    failure_message: str | None
    amount_refunded: int
    refunded: bool
    payment_method_id: str | None
    gateway: str
    gateway_reference: str | None
    description: str | None
    created: datetime


class RefundCreate(BaseModel):
    payment_id: str = Field(max_length=64)
    amount: int | None = Field(
        default=None, gt=0, strict=True, description="All that is left if omitted"
    )
    reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None


class Refund(BaseModel):
    id: str
    object: Literal["refund"] = "refund"
    payment_id: str
    amount: int
    currency: str
    # `pending` while the gateway is asked: the amount is already set aside on the payment.
    status: Literal["pending", "succeeded", "failed"]
    reason: str | None
    created: datetime


class PaymentStatusReport(BaseModel):
    """The answer of the original design's `GET /payment-status`: a customer's latest payment."""

    customer_id: int = Field(description="The customer's number")
    payment_id: str
    status: PaymentStatus
    amount: int = Field(description="Minor units")
    currency: str
    failure_code: str | None
    created: datetime
