"""The public types of a tenant's payment gateways and routing rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from recur.kit.bodies import RequestBody
from recur.kit.money import MAX_MINOR

GatewayName = Literal["sandbox", "stripe", "adyen", "manual"]
# Card networks as Stripe names them; adapters report a card's brand in these words.
CardBrand = Literal["amex", "diners", "discover", "jcb", "mastercard", "unionpay", "visa"]


class GatewayCreate(RequestBody):
    name: GatewayName
    credentials: dict[str, Any] = Field(
        default_factory=dict,
        repr=False,
        description="stripe: api_key, webhook_secret; adyen: api_key, merchant_account, "
        "hmac_key (hexadecimal), live_url_prefix, webhook_username, webhook_password; sandbox: "
        "optional faults and webhook_secret; manual: optional instructions. Stored encrypted, "
        "never returned",
    )
    enabled: bool = Field(default=True, strict=True)


class GatewayUpdate(RequestBody):
    """Omitted fields keep their value; `credentials` replaces all of them at once."""

    credentials: dict[str, Any] | None = Field(default=None, repr=False)
    enabled: bool | None = Field(default=None, strict=True)


class Gateway(BaseModel):
    id: str
    object: Literal["gateway"] = "gateway"
    name: GatewayName
    enabled: bool
    credentials_summary: dict[str, str] = Field(
        description="What may be shown of the credentials: the last 4 characters of a key, "
        "the merchant account. The credentials themselves are never returned"
    )
    created: datetime
    updated: datetime


class RoutingConditions(RequestBody):
    """What a payment must be for the rule to apply; an omitted condition matches any."""

    currency: str | None = Field(default=None, max_length=8, description="ISO 4217 code")
    amount_min: int | None = Field(
        default=None, ge=0, le=MAX_MINOR, strict=True, description="Inclusive, minor units"
    )
    amount_max: int | None = Field(
        default=None, ge=0, le=MAX_MINOR, strict=True, description="Inclusive, minor units"
    )
    card_brand: CardBrand | None = None


class RoutingShare(RequestBody):
    gateway: GatewayName
    percent: int = Field(ge=1, le=100, strict=True)


class RoutingRuleCreate(RequestBody):
    """Exactly one of `gateways` and `split`."""

    priority: int = Field(
        ge=0, le=1_000_000, strict=True, description="Lowest first; ties go to the oldest rule"
    )
    conditions: RoutingConditions = Field(default_factory=RoutingConditions)
    gateways: list[GatewayName] | None = Field(
        default=None, min_length=1, max_length=4, description="Tried in this order (failover)"
    )
    split: list[RoutingShare] | None = Field(
        default=None,
        min_length=1,
        max_length=4,
        description="Percentages summing to 100: one gateway is drawn per payment, the same "
        "for its retries; the split's others follow it, in this order, as failover",
    )


class RoutingRuleUpdate(RequestBody):
    """Omitted fields keep their value; `conditions` replaces all of them; `gateways` or
    `split` replaces the action."""

    priority: int | None = Field(default=None, ge=0, le=1_000_000, strict=True)
    conditions: RoutingConditions | None = None
    gateways: list[GatewayName] | None = Field(default=None, min_length=1, max_length=4)
    split: list[RoutingShare] | None = Field(default=None, min_length=1, max_length=4)


class RoutingRule(BaseModel):
    id: str
    object: Literal["routing_rule"] = "routing_rule"
    priority: int
    conditions: RoutingConditions
    gateways: list[GatewayName] | None
    split: list[RoutingShare] | None
    created: datetime
    updated: datetime
