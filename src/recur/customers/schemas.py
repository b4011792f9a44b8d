"""The Customer Information Service's public types: its API and its client speak these."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class Address(BaseModel):
    line1: str | None = Field(default=None, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)
    state: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"
    )


Metadata = dict[str, str]


class CustomerCreate(BaseModel):
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    description: str | None = Field(default=None, max_length=500)
    address: Address | None = None
    currency: str | None = Field(
        default=None,
        description="ISO 4217. When omitted, the first subscription or order sets it.",
    )
    metadata: Metadata = Field(default_factory=dict, max_length=50)
    test_clock_id: str | None = Field(default=None, max_length=64)


class CustomerUpdate(BaseModel):
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    description: str | None = Field(default=None, max_length=500)
    address: Address | None = None
    metadata: Metadata | None = Field(default=None, max_length=50)
    default_payment_method_id: str | None = Field(default=None, max_length=64)


class Customer(BaseModel):
    id: str
    object: Literal["customer"] = "customer"
    number: int
    email: str | None
    name: str | None
    phone: str | None
    description: str | None
    address: Address | None
    currency: str | None
    metadata: Metadata
    default_payment_method_id: str | None
    test_clock_id: str | None
    created: datetime


class BillingHistoryEntry(BaseModel):
    id: str = Field(description="The order, payment or refund id")
    object: Literal["order", "payment", "refund"]
    status: str
    amount: int
    currency: str
    description: str | None
    order_id: str | None
    created: datetime
    updated: datetime
