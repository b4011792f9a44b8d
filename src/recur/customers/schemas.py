"""The Customer Information Service's public types: its API and its client speak these."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from recur.kit.bodies import RequestBody

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


class Address(RequestBody):
    line1: str | None = Field(default=None, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)
    state: str | None = Field(default=None, max_length=100)
    postal_code: str | None = Field(default=None, max_length=20)
    country: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2"
    )


Metadata = dict[str, str]
TaxRateIds = Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=10)]


class CustomerCreate(RequestBody):
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
    tax_rate_ids: TaxRateIds = Field(
        default_factory=list, description="Tax rates applied to all the customer's orders"
    )


class CustomerUpdate(RequestBody):
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=40)
    description: str | None = Field(default=None, max_length=500)
    address: Address | None = None
    metadata: Metadata | None = Field(default=None, max_length=50)
    default_payment_method_id: str | None = Field(default=None, max_length=64)
    tax_rate_ids: TaxRateIds | None = None


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
    tax_rate_ids: list[str] = Field(default_factory=list)
    balance: int = Field(description="Credit held, in minor units of `currency`")
    created: datetime


CreditType = Literal["manual", "proration", "applied_to_order", "unapplied_from_order"]


class CreditCreate(RequestBody):
    amount: int = Field(gt=0, le=2**62, strict=True, description="Credit to grant, minor units")
    currency: str | None = Field(
        default=None, description="ISO 4217; defaults to, and must match, the customer's"
    )
    description: str | None = Field(default=None, max_length=500)


class BalanceTransaction(BaseModel):
    id: str
    object: Literal["balance_transaction"] = "balance_transaction"
    customer_id: str
    type: CreditType
    amount: int
    currency: str
    ending_balance: int
    source_id: str
    description: str | None
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


@dataclass(frozen=True)
class CreditRequest:
    """Spend up to `max_amount` of a customer's credit on an order (the batch form)."""

    customer_id: str
    order_id: str
    currency: str
    max_amount: int
