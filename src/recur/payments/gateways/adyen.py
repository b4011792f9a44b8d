"""The `adyen` gateway, on Adyen's documented Checkout API (v71), with aiohttp.

Every call is a JSON POST with the tenant's `X-API-Key` and our `Idempotency-Key` header.

- tokenize: a zero-value `/payments` with the card (`storePaymentMethod: true`, `Ecommerce`),
  which has the issuer verify it; the token is `<shopperReference>/<storedPaymentMethodId>`.
  Sending raw card data needs Adyen's PCI permission for it on the merchant account.
- charge: `/payments` with the stored card, `shopperInteraction: ContAuth`, the tenant's
  `recurringProcessingModel` (Subscription by default) and `reference` = our idempotency key.
  `resultCode` Authorised succeeds, Refused or Cancelled is a decline, Error is retriable
  (nothing was charged), Pending or Received is an unknown outcome. The `pspReference` is the
  reference.
- lookup_charge: Adyen's Checkout API has no search by reference, but it replays the first
  answer to an Idempotency-Key (keys are kept at least 31 days), so the lookup sends the very
  same request again, built the same way from the same key, token, amount and currency. If the
  first one never reached Adyen, this one is processed instead: the charge is made at most once
  either way, so Adyen's lookup never answers `not_found`. Adyen answers 422 with errorCode 704
  while the first is still in flight: `unknown`.
- refund: `/payments/{pspReference}/refunds`, partial amounts allowed. Adyen only says it has
  `received` a refund; the REFUND webhook settles it, so `refund` raises GatewayOutcomeUnknown
  with the refund's pspReference.
- webhooks (`adyen_notifications`): standard notifications, one NotificationRequestItem
  each, verified with the tenant's HMAC key (hex): the base64 HMAC-SHA256 of
  `pspReference:originalReference:merchantAccountCode:merchantReference:value:currency:
  eventCode:success` must equal `additionalData.hmacSignature`; and, when the tenant set a
  webhook username, the Basic auth Adyen sends with it. The event id is
  `pspReference:eventCode:success`, which Adyen keeps across its redeliveries.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field

from recur.kit.clock import Clock
from recur.payments.gateways.adyen_notifications import (
    NAME,
    VERIFY_PREFIX,
    check_basic_auth,
    parse_notification,
)
from recur.payments.gateways.base import (
    ChargeLookup,
    ChargeResult,
    ChargeStatus,
    GatewayDecline,
    GatewayOutcomeUnknown,
    GatewayRetriableError,
    GatewayWebhookEvent,
    RefundLookup,
    RefundResult,
    TokenizedCard,
    WebhookSignatureError,
    header,
    never_sent,
    read_settings,
)
from recur.payments.gateways.sandbox import card_brand, normalize_number
from recur.payments.schemas import CardIn

API_VERSION = "v71"
TEST_BASE = "https://checkout-test.adyen.com"
IN_FLIGHT = "704"  # Adyen's errorCode for a request with the same key still being processed
BRANDS = {"visa": "visa", "mc": "mastercard", "amex": "amex", "discover": "discover"}
BRANDS |= {"jcb": "jcb", "diners": "diners"}
# Adyen's refusalReasonCode, to the codes Recur (and Stripe) use.
REFUSALS = {
    "2": "card_declined",
    "5": "card_declined",
    "6": "expired_card",
    "7": "invalid_amount",
    "8": "incorrect_number",
    "9": "issuer_not_available",
    "12": "insufficient_funds",
    "14": "fraudulent",
    "20": "fraudulent",
    "22": "fraudulent",
    "24": "incorrect_cvc",
    "25": "restricted_card",
    "31": "fraudulent",
    "38": "authentication_required",
}
# Adyen's validation errorCodes about the card itself.
CARD_ERRORS = {"101": "incorrect_number", "102": "incorrect_number", "103": "invalid_cvc"}


class AdyenSettings(BaseModel):
    """A tenant's Adyen credentials and settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(min_length=8, max_length=500)
    merchant_account: str = Field(min_length=1, max_length=100)
    # Shown hex-encoded in Adyen's Customer Area; decoded to bytes to sign.
    hmac_key: str | None = Field(
        default=None, min_length=2, max_length=256, pattern=r"^(?:[0-9A-Fa-f]{2})+$"
    )
    # The live endpoint's prefix, from the Customer Area; without it, Adyen's test platform.
    live_url_prefix: str | None = Field(default=None, pattern=r"^[a-z0-9-]{1,100}$")
    webhook_username: str | None = Field(default=None, min_length=1, max_length=200)
    webhook_password: str | None = Field(default=None, min_length=1, max_length=200)
    recurring_processing_model: Literal["Subscription", "CardOnFile", "UnscheduledCardOnFile"] = (
        "Subscription"
    )
    # The currency of the zero-value check made when a card is tokenized.
    verification_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")


class AdyenGateway:
    """Adyen's Checkout API; see the module docstring."""

    name = NAME

    def __init__(
        self,
        clock: Clock,
        settings: AdyenSettings,
        *,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = 30.0,
    ):
        self._clock = clock
        self._settings = settings
        if base_url is None and settings.live_url_prefix:
            base_url = (
                f"https://{settings.live_url_prefix}-checkout-live.adyenpayments.com/checkout"
            )
        self._base = f"{(base_url or TEST_BASE).rstrip('/')}/{API_VERSION}"
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, connect=min(timeout_seconds, 5.0)
        )
        self._session = session
        self._own_session: aiohttp.ClientSession | None = None

    @classmethod
    def from_credentials(
        cls, clock: Clock, credentials: Mapping[str, Any], **options: Any
    ) -> AdyenGateway:
        return cls(clock, read_settings(AdyenSettings, credentials, NAME), **options)

    async def tokenize(self, card: CardIn) -> TokenizedCard:
        digits = normalize_number(card.number) or card.number
        shopper = f"recur_{secrets.token_hex(12)}"
        method: dict[str, Any] = {
            "type": "scheme",
            "number": digits,
            "expiryMonth": f"{card.exp_month:02d}",
            "expiryYear": str(card.exp_year),
        }
        if card.cvc is not None:
            method["cvc"] = card.cvc
        reference = f"{VERIFY_PREFIX}{secrets.token_hex(12)}"
        status, answer = await self._post(
            "/payments",
            {
                "merchantAccount": self._settings.merchant_account,
                "amount": {"value": 0, "currency": self._settings.verification_currency},
                "reference": reference,
                "paymentMethod": method,
                "shopperReference": shopper,
                "storePaymentMethod": True,
                "shopperInteraction": "Ecommerce",
                "recurringProcessingModel": self._settings.recurring_processing_model,
            },
            idempotency_key=reference,
            may_be_done=False,
        )
        if status != 200:
            code = str(answer.get("errorCode", ""))
            raise GatewayDecline(
                CARD_ERRORS.get(code, "invalid_card"),
                str(answer.get("message") or "Adyen refused the card's details."),
            )
        result = answer.get("resultCode")
        if result == "Error":
            raise GatewayRetriableError("gateway_error", "Adyen could not check the card now")
        if result != "Authorised":
            code, message = _refusal(answer)
            raise GatewayDecline(code, message)
        extra = answer.get("additionalData") or {}
        stored = extra.get("tokenization.storedPaymentMethodId") or extra.get(
            "recurring.recurringDetailReference"
        )
        if not stored:
            raise GatewayRetriableError(
                "tokenization_disabled",
                "Adyen stored no payment method: tokenization is off for this merchant account",
            )
        variant = extra.get("paymentMethod") or (answer.get("paymentMethod") or {}).get("brand")
        return TokenizedCard(
            token=f"{shopper}/{stored}",
            brand=BRANDS.get(str(variant), card_brand(digits)),
            last4=str(extra.get("cardSummary") or digits[-4:]),
            exp_month=card.exp_month,
            exp_year=card.exp_year,
        )

    async def charge(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> ChargeResult:
        status, answer = await self._post(
            "/payments",
            self._charge_body(token, amount, currency, idempotency_key),
            idempotency_key=idempotency_key,
            may_be_done=True,
        )
        if status == 422 and str(answer.get("errorCode")) == IN_FLIGHT:
            raise GatewayOutcomeUnknown("in_progress", "Adyen is still processing this key")
        if status != 200:
            return ChargeResult(
                False,
                answer.get("pspReference"),
                "invalid_request",
                str(answer.get("message") or f"Adyen refused the request ({status})"),
            )
        lookup = _payment_outcome(answer)
        if lookup.status == ChargeStatus.UNKNOWN:
            raise GatewayOutcomeUnknown(
                "pending", "Adyen has not decided yet", reference=lookup.reference
            )
        if answer.get("resultCode") == "Error":
            raise GatewayRetriableError("gateway_error", "Adyen could not process the payment")
        result = lookup.result()
        assert result is not None
        return result

    async def refund(
        self, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        status, answer = await self._post(
            f"/payments/{reference}/refunds",
            {
                "merchantAccount": self._settings.merchant_account,
                "amount": {"value": amount, "currency": currency.upper()},
                "reference": idempotency_key,
            },
            idempotency_key=idempotency_key,
            may_be_done=True,
        )
        if status == 422 and str(answer.get("errorCode")) == IN_FLIGHT:
            raise GatewayOutcomeUnknown("in_progress", "Adyen is still processing this key")
        if status not in (200, 201):
            return RefundResult(
                False,
                None,
                "refund_refused",
                str(answer.get("message") or f"Adyen refused the refund ({status})"),
            )
        psp = answer.get("pspReference")
        # `received`: the REFUND webhook says whether it went through.
        raise GatewayOutcomeUnknown(
            "pending", "Adyen received the refund; its webhook settles it", reference=psp
        )

    async def lookup_charge(
        self, idempotency_key: str, *, token: str, amount: int, currency: str
    ) -> ChargeLookup:
        status, answer = await self._post(
            "/payments",
            self._charge_body(token, amount, currency, idempotency_key),
            idempotency_key=idempotency_key,
            may_be_done=False,
        )
        if status == 422 and str(answer.get("errorCode")) == IN_FLIGHT:
            return ChargeLookup(ChargeStatus.UNKNOWN)
        if status != 200:
            return ChargeLookup(
                ChargeStatus.FAILED,
                answer.get("pspReference"),
                "invalid_request",
                str(answer.get("message") or f"Adyen refused the request ({status})"),
            )
        return _payment_outcome(answer)

    async def lookup_refund(
        self, idempotency_key: str, *, reference: str, amount: int, currency: str
    ) -> RefundLookup:
        # Adyen has no endpoint to read a refund back; the same request under the same
        # Idempotency-Key is answered as the first one was (and makes the refund if the first
        # never arrived). A refund it received is settled by its REFUND notification.
        try:
            result = await self.refund(reference, amount, currency, idempotency_key)
        except GatewayOutcomeUnknown as unknown:
            return RefundLookup(ChargeStatus.UNKNOWN, unknown.reference)
        return RefundLookup.settled(result)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayWebhookEvent:
        if not self._settings.hmac_key:
            raise WebhookSignatureError(
                "no_webhook_secret", "no Adyen hmac_key is set for this tenant"
            )
        if self._settings.webhook_username is not None:
            check_basic_auth(
                header(headers, "Authorization"),
                self._settings.webhook_username,
                self._settings.webhook_password or "",
            )
        return parse_notification(body, self._settings.hmac_key)

    async def aclose(self) -> None:
        """Close the HTTP session the adapter opened itself (a shared one is left open)."""
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None

    def _charge_body(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> dict[str, Any]:
        # The same inputs make the same body: `lookup_charge` relies on it.
        shopper, _, stored = token.rpartition("/")
        body: dict[str, Any] = {
            "merchantAccount": self._settings.merchant_account,
            "amount": {"value": amount, "currency": currency.upper()},
            "reference": idempotency_key,
            "paymentMethod": {"type": "scheme", "storedPaymentMethodId": stored},
            "shopperInteraction": "ContAuth",
            "recurringProcessingModel": self._settings.recurring_processing_model,
        }
        if shopper:
            body["shopperReference"] = shopper
        return body

    def _http(self) -> aiohttp.ClientSession:
        if self._session is not None:
            return self._session
        if self._own_session is None or self._own_session.closed:
            self._own_session = aiohttp.ClientSession()
        return self._own_session

    async def _post(
        self, path: str, body: dict[str, Any], *, idempotency_key: str, may_be_done: bool
    ) -> tuple[int, dict[str, Any]]:
        """POST to the Checkout API: its status and JSON answer for 2xx and 4xx validation
        errors; the errors that are neither raised as retriable or unknown."""
        headers = {
            "X-API-Key": self._settings.api_key,
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        try:
            async with self._http().post(
                self._base + path, data=orjson.dumps(body), headers=headers, timeout=self._timeout
            ) as response:
                status, raw = response.status, await response.read()
                retry_after = response.headers.get("Retry-After")
        except (TimeoutError, aiohttp.ClientError) as exc:
            if never_sent(exc):
                raise GatewayRetriableError(
                    "connection_failed", "Adyen could not be reached"
                ) from exc
            if not may_be_done:
                raise GatewayRetriableError("timeout", "Adyen did not answer in time") from exc
            raise GatewayOutcomeUnknown("timeout", "Adyen did not answer in time") from exc
        if status in (401, 403):
            raise GatewayRetriableError("gateway_auth_failed", "Adyen refused the tenant's API key")
        if status == 429:
            raise GatewayRetriableError(
                "rate_limited", "Adyen is rate limiting us", retry_after=_seconds(retry_after)
            )
        # (A 404 is no answer about the payment: a wrong URL or account prefix, a proxy.)
        if status >= 500 or status not in (200, 201, 400, 422):
            if not may_be_done:
                raise GatewayRetriableError("gateway_error", f"Adyen answered {status}")
            raise GatewayOutcomeUnknown("gateway_error", f"Adyen answered {status}")
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            if not may_be_done:
                raise GatewayRetriableError("gateway_error", "Adyen's answer was not JSON")
            raise GatewayOutcomeUnknown("gateway_error", "Adyen's answer was not JSON")
        return status, answer


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _refusal(answer: Mapping[str, Any]) -> tuple[str, str]:
    code = REFUSALS.get(str(answer.get("refusalReasonCode")), "card_declined")
    return code, str(answer.get("refusalReason") or "Your card was declined.")


def _payment_outcome(answer: Mapping[str, Any]) -> ChargeLookup:
    result, psp = answer.get("resultCode"), answer.get("pspReference")
    if result == "Authorised":
        return ChargeLookup(ChargeStatus.SUCCEEDED, psp)
    if result in ("Pending", "Received"):
        return ChargeLookup(ChargeStatus.UNKNOWN, psp)
    if result == "Cancelled":
        return ChargeLookup(ChargeStatus.FAILED, psp, "canceled", "The payment was cancelled.")
    if result == "Error":
        message = str(answer.get("refusalReason") or "Adyen could not process the payment.")
        return ChargeLookup(ChargeStatus.FAILED, psp, "processing_error", message)
    if result == "Refused":
        code, message = _refusal(answer)
        return ChargeLookup(ChargeStatus.FAILED, psp, code, message)
    # A shopper action asked of an off-session payment: it cannot be given.
    return ChargeLookup(
        ChargeStatus.FAILED, psp, "authentication_required", "The card asks for authentication."
    )
