"""The Payment Gateway Service's public types: its API and its client speak these."""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from recur.kit.bodies import RequestBody

PaymentStatus = Literal["pending", "succeeded", "failed"]
DisputeStatus = Literal["open", "won", "lost"]


class CardIn(RequestBody):
    """Card details as the customer typed them. Tokenized at once, never stored or logged."""

    number: str = Field(min_length=12, max_length=23, repr=False)
    exp_month: int = Field(ge=1, le=12, strict=True)
    exp_year: int = Field(ge=2000, le=2200, strict=True)
    cvc: str | None = Field(default=None, min_length=3, max_length=4, repr=False)


PaymentMethodType = Literal["card", "bank_transfer", "cash"]


class PaymentMethodCreate(RequestBody):
    type: PaymentMethodType = Field(
        default="card",
        description="`card` (give `card`), or `bank_transfer` or `cash`: paid outside Recur "
        "and marked paid by an operator (the manual gateway)",
    )
    card: CardIn | None = None
    set_default: bool = Field(default=False, description="Make it the customer's default")

    @model_validator(mode="after")
    def _card_iff_card(self) -> PaymentMethodCreate:
        if self.type == "card" and self.card is None:
            raise ValueError("card is required for a card payment method")
        if self.type != "card" and self.card is not None:
            raise ValueError(f"a {self.type} payment method takes no card")
        return self


class CardDetails(BaseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class PaymentMethod(BaseModel):
    id: str
    object: Literal["payment_method"] = "payment_method"
    customer_id: str
    type: PaymentMethodType = "card"
    gateway: str
    card: CardDetails | None = Field(description="A card's details; null for other types")
    created: datetime


class PaymentCreate(RequestBody):
    order_id: str | None = Field(default=None, max_length=64)
    customer_id: str | None = Field(default=None, max_length=64)
    amount: int | None = Field(default=None, gt=0, strict=True, description="Minor units")
    currency: str | None = None
    payment_method_id: str | None = Field(default=None, max_length=64)
    card: CardIn | None = Field(default=None, description="Charge a card once without saving it")
    description: str | None = Field(default=None, max_length=500)


AttemptOutcome = Literal["succeeded", "declined", "retriable_error", "unknown", "skipped"]


class PaymentAttempt(BaseModel):
    """One charge of a payment sent to (or skipped at) one gateway, with its idempotency key."""

    id: str
    object: Literal["payment_attempt"] = "payment_attempt"
    number: int
    gateway: str
    idempotency_key: str
    outcome: AttemptOutcome | None = Field(description="null while the call is under way")
    failure_code: str | None
    failure_message: str | None
    gateway_reference: str | None
    created: datetime
    settled_at: datetime | None


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
    dispute_status: DisputeStatus | None = Field(
        default=None, description="A chargeback from the gateway: open, won or lost"
    )
    amount_disputed: int = Field(default=0, description="Minor units the dispute is about")
    routing_reason: str | None = Field(
        default=None, description="Why the payment went to its gateways, in words"
    )
    routing_rule_id: str | None = Field(default=None, description="The routing rule that decided")
    attempts: list[PaymentAttempt] | None = Field(
        default=None,
        description="Each gateway tried, in order (GET /v1/payments/{id} only; null elsewhere)",
    )


ChargeOutcome = Literal[
    "succeeded", "failed", "no_payment_method", "paid", "not_payable", "in_progress"
]


class OrderCharge(BaseModel):
    """The answer about one order of a batch charge (see PaymentsClient.charge_orders)."""

    order_id: str
    outcome: ChargeOutcome
    payment: Payment | None = None


class RefundCreate(RequestBody):
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
    # The gateway's id of the refund, once it has one.
    gateway_reference: str | None = None
    # Why it failed (Stripe's `failure_reason`): the gateway's code, or `not_found` when the
    # gateway never received it. The amount can then be refunded again.
    failure_code: str | None = None
    failure_message: str | None = None
    created: datetime


class OperatorMark(RequestBody):
    """An operator's word on a manual payment (a bank transfer found, cash taken, or neither)."""

    reference: str | None = Field(
        default=None, max_length=255, description="The bank's reference, or a receipt number"
    )
    note: str | None = Field(default=None, max_length=500)


class PaymentStatusReport(BaseModel):
    """The answer of the original design's `GET /payment-status`: a customer's latest payment."""

    customer_id: int = Field(description="The customer's number")
    payment_id: str
    status: PaymentStatus
    amount: int = Field(description="Minor units")
    currency: str
    failure_code: str | None
    created: datetime


FinalAction = Literal["cancel", "unpaid"]
RetryDay = Annotated[int, Field(ge=1, le=365, strict=True)]


class DunningSettingsUpdate(RequestBody):
    """A tenant's retry schedule for failed renewal charges; omitted fields keep their value."""

    retry_days: list[RetryDay] | None = Field(
        default=None,
        min_length=1,
        max_length=10,
        description="Days after the first failure on which to retry, strictly increasing",
    )
    final_action: FinalAction | None = Field(
        default=None,
        description="What becomes of the subscription after the last failed retry: "
        "`cancel` it, or leave it `unpaid` (kept, but no further renewals)",
    )

    @field_validator("retry_days")
    @classmethod
    def _increasing(cls, days: list[int] | None) -> list[int] | None:
        if days is not None and any(b <= a for a, b in pairwise(days)):
            raise ValueError("retry days must be strictly increasing")
        return days


class DunningSettings(BaseModel):
    object: Literal["dunning_settings"] = "dunning_settings"
    retry_days: list[int]
    final_action: FinalAction


class DunningRunResult(BaseModel):
    """What one pass over the due retries did."""

    recovered: int = 0
    failed: int = 0
    exhausted: int = 0
    closed: int = Field(default=0, description="Orders paid or ended another way: not charged")
    errors: int = 0

    @property
    def processed(self) -> int:
        return self.recovered + self.failed + self.exhausted + self.closed + self.errors


class DunningExhausted(BaseModel):
    """The payload of `dunning.exhausted`: the last retry of a subscription order failed."""

    order_id: str
    subscription_id: str
    customer_id: str
    final_action: FinalAction
    attempts: int = Field(description="Retries made, the first failed charge not counted")
    exhausted_at: datetime = Field(description="In the subscription's time (its test clock's)")
