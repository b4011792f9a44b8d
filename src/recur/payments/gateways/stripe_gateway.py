"""The `stripe` gateway, on the official `stripe` package.

Async throughout: `StripeClient` with the package's own `AIOHTTPClient`, the HTTP library Recur
already uses, on the runtime's shared aiohttp session when it is given one. The package's own
retries are off (`max_network_retries=0`): the service decides what to retry and where, and a
retry the package made inside a call would hide a timeout's doubt from it.

- tokenize: a PaymentMethod of the card, a Customer, and a SetupIntent confirmed off-session,
  which verifies the card with the issuer now (a refused card keeps nothing). The token is
  `cus_.../pm_...`: off-session charges need the card attached to a customer.
- charge: a PaymentIntent created with `confirm=true, off_session=true`, our idempotency key as
  Stripe's `Idempotency-Key` and in `metadata[recur_idempotency_key]`. Its id (`pi_...`) is the
  reference.
- lookup_charge: the customer's latest PaymentIntents (a list, strongly consistent), then a
  search on the metadata (Stripe's search lags up to a minute, an hour in an outage). `not_found`
  after only a search may be that lag: the reconciler should ask again before trusting it.
- refund: a Refund of the PaymentIntent, partial amounts allowed, our refund id as the key.
- webhooks (`stripe_objects`): `Stripe-Signature` checked with the package's
  `WebhookSignature.verify_header`; the timestamp's tolerance is checked against Recur's clock
  instead of the package's `time.time()`, so test clocks work.

Errors: a CardError is a decline (Stripe's `decline_code`, or its `code`); a refused connection,
429, 401 or 403 is retriable (nothing was done); a timeout, a lost connection, a 5xx, or a 409
(the same key still in flight) is an unknown outcome.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import stripe
from pydantic import BaseModel, ConfigDict, Field

from recur.kit.clock import Clock
from recur.payments.gateways.base import (
    ChargeLookup,
    ChargeResult,
    ChargeStatus,
    GatewayDecline,
    GatewayError,
    GatewayOutcomeUnknown,
    GatewayRetriableError,
    GatewayWebhookEvent,
    RefundLookup,
    RefundResult,
    TokenizedCard,
    WebhookSignatureError,
    never_sent,
    read_settings,
)
from recur.payments.gateways.stripe_objects import (
    GENERIC_DECLINES,
    KEY_METADATA,
    NAME,
    intent_status,
    parse_event,
)
from recur.payments.schemas import CardIn

if TYPE_CHECKING:
    from stripe.params import (
        PaymentIntentCreateParams,
        PaymentMethodCreateParamsCard,
        RefundCreateParams,
        RefundListParams,
    )


# The stripe package prints the form bodies it sends (a card's CVC and expiry among them) to
# standard error, past every log filter, when STRIPE_LOG is "debug" or "info": never in Recur.
setattr(importlib.import_module("stripe._util"), "STRIPE_LOG", None)  # noqa: B010

API_BASE = "https://api.stripe.com"
BRANDS = {"visa", "mastercard", "amex", "discover", "jcb", "diners"}
TRANSPORT_ERRORS = (TimeoutError, aiohttp.ClientError)


class StripeSettings(BaseModel):
    """A tenant's Stripe credentials."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A secret or restricted key: a publishable key (pk_) is refused now, not at the first charge.
    api_key: str = Field(min_length=8, max_length=500, pattern=r"^(sk|rk)_")
    webhook_secret: str | None = Field(default=None, min_length=8, max_length=500)


class StripeGateway:
    """Stripe through its official package; see the module docstring."""

    name = NAME

    def __init__(
        self,
        clock: Clock,
        settings: StripeSettings,
        *,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_seconds: float = 30.0,
    ):
        self._clock = clock
        self._webhook_secret = settings.webhook_secret
        timeout = aiohttp.ClientTimeout(total=timeout_seconds, connect=min(timeout_seconds, 5.0))
        self._http = stripe.AIOHTTPClient(timeout=timeout, session=session)
        self._client = stripe.StripeClient(
            settings.api_key,
            base_addresses={"api": (base_url or API_BASE).rstrip("/")},
            http_client=self._http,
            max_network_retries=0,
        )

    @classmethod
    def from_credentials(
        cls, clock: Clock, credentials: Mapping[str, Any], **options: Any
    ) -> StripeGateway:
        return cls(clock, read_settings(StripeSettings, credentials, NAME), **options)

    async def tokenize(self, card: CardIn) -> TokenizedCard:
        details: PaymentMethodCreateParamsCard = {
            "number": card.number.replace(" ", "").replace("-", ""),
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
        }
        if card.cvc is not None:
            details["cvc"] = card.cvc
        try:
            method = await self._client.v1.payment_methods.create_async(
                {"type": "card", "card": details}
            )
            customer = await self._client.v1.customers.create_async(
                {"description": "Recur card holder"}
            )
            setup = await self._client.v1.setup_intents.create_async(
                {
                    "customer": customer.id,
                    "payment_method": method.id,
                    "confirm": True,
                    "usage": "off_session",
                    "allowed_payment_method_types": ["card"],
                }
            )
        except stripe.CardError as exc:
            code, message = _decline_of(exc)
            raise GatewayDecline(code, message) from None
        except (stripe.StripeError, *TRANSPORT_ERRORS) as exc:
            _raise_unsettled(exc, may_be_done=False)
        if setup.status == "requires_action":
            raise GatewayDecline(
                "authentication_required",
                "The card asks for authentication, which cannot be given here.",
            )
        if setup.status != "succeeded":
            raise GatewayDecline("card_declined", "Your card was declined.")
        kept = method.to_dict()["card"]
        brand = kept.get("brand")
        return TokenizedCard(
            token=f"{customer.id}/{method.id}",
            brand=brand if brand in BRANDS else "unknown",
            last4=str(kept.get("last4", "")),
            exp_month=int(kept.get("exp_month", card.exp_month)),
            exp_year=int(kept.get("exp_year", card.exp_year)),
        )

    async def charge(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> ChargeResult:
        customer, method = _split_token(token)
        params: PaymentIntentCreateParams = {
            "amount": amount,
            "currency": currency.lower(),
            "payment_method": method,
            "confirm": True,
            "off_session": True,
            "allowed_payment_method_types": ["card"],
            "metadata": {KEY_METADATA: idempotency_key},
        }
        if customer:
            params["customer"] = customer
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params, {"idempotency_key": idempotency_key}
            )
        except stripe.CardError as exc:
            code, message = _decline_of(exc)
            return ChargeResult(False, _error_intent_id(exc), code, message)
        except stripe.InvalidRequestError as exc:
            # Nothing was charged: a token Stripe does not know, an amount it refuses.
            return ChargeResult(
                False, None, exc.code or "invalid_request", exc.user_message or "Refused."
            )
        except (stripe.StripeError, *TRANSPORT_ERRORS) as exc:
            _raise_unsettled(exc, may_be_done=True)
        lookup = intent_status(intent.to_dict())
        if lookup.status == ChargeStatus.UNKNOWN:
            raise GatewayOutcomeUnknown(
                "pending", f"Stripe is still processing {intent.id}", reference=intent.id
            )
        result = lookup.result()
        assert result is not None
        return result

    async def refund(
        self, reference: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundResult:
        params: RefundCreateParams = {
            "amount": amount,
            "metadata": {KEY_METADATA: idempotency_key},
        }
        if reference.startswith("ch_"):
            params["charge"] = reference
        else:
            params["payment_intent"] = reference
        try:
            refund = await self._client.v1.refunds.create_async(
                params, {"idempotency_key": idempotency_key}
            )
        except (stripe.InvalidRequestError, stripe.CardError) as exc:
            return RefundResult(
                False, None, exc.code or "invalid_request", exc.user_message or "Refused."
            )
        except (stripe.StripeError, *TRANSPORT_ERRORS) as exc:
            _raise_unsettled(exc, may_be_done=True)
        if refund.status == "succeeded":
            return RefundResult(True, refund.id)
        if refund.status in ("failed", "canceled"):
            reason = refund.to_dict().get("failure_reason") or "refund_failed"
            return RefundResult(False, refund.id, reason, "Stripe could not make the refund.")
        raise GatewayOutcomeUnknown(
            "pending", f"Stripe has not finished refund {refund.id}", reference=refund.id
        )

    async def lookup_charge(
        self, idempotency_key: str, *, token: str, amount: int, currency: str
    ) -> ChargeLookup:
        customer, _ = _split_token(token)
        found: list[dict[str, Any]] = []
        try:
            if customer:
                page = await self._client.v1.payment_intents.list_async(
                    {"customer": customer, "limit": 100}
                )
                found = _with_key(page.to_dict()["data"], idempotency_key)
            if not found:
                escaped = idempotency_key.replace("\\", "\\\\").replace("'", "\\'")
                result = await self._client.v1.payment_intents.search_async(
                    {"query": f"metadata['{KEY_METADATA}']:'{escaped}'", "limit": 10}
                )
                found = _with_key(result.to_dict()["data"], idempotency_key)
        except (stripe.StripeError, *TRANSPORT_ERRORS) as exc:
            _raise_unsettled(exc, may_be_done=False)
        if not found:
            return ChargeLookup(ChargeStatus.NOT_FOUND)
        lookups = [intent_status(intent) for intent in found]
        # One key makes one PaymentIntent; should there be more, a success is the truth.
        order = [ChargeStatus.SUCCEEDED, ChargeStatus.UNKNOWN, ChargeStatus.FAILED]
        return min(lookups, key=lambda lookup: order.index(lookup.status))

    async def lookup_refund(
        self, idempotency_key: str, *, reference: str, amount: int, currency: str
    ) -> RefundLookup:
        of_charge: RefundListParams = {"limit": 100}
        if reference.startswith("ch_"):
            of_charge["charge"] = reference
        else:
            of_charge["payment_intent"] = reference
        try:
            page = await self._client.v1.refunds.list_async(of_charge)
        except (stripe.StripeError, *TRANSPORT_ERRORS) as exc:
            _raise_unsettled(exc, may_be_done=False)
        found = [
            refund
            for refund in page.to_dict()["data"]
            if (refund.get("metadata") or {}).get(KEY_METADATA) == idempotency_key
        ]
        if not found:
            return RefundLookup(ChargeStatus.NOT_FOUND)
        refund = found[0]  # one key makes one refund
        if refund["status"] == "succeeded":
            return RefundLookup(ChargeStatus.SUCCEEDED, refund["id"])
        if refund["status"] in ("failed", "canceled"):
            reason = refund.get("failure_reason") or "refund_failed"
            return RefundLookup(
                ChargeStatus.FAILED, refund["id"], reason, "Stripe could not make the refund."
            )
        return RefundLookup(ChargeStatus.UNKNOWN, refund["id"])

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> GatewayWebhookEvent:
        if not self._webhook_secret:
            raise WebhookSignatureError(
                "no_webhook_secret", "no Stripe webhook_secret is set for this tenant"
            )
        return parse_event(headers, body, self._webhook_secret, self._clock.now())

    async def aclose(self) -> None:
        """Close the HTTP session the adapter opened itself (a shared one is left open)."""
        await self._http.close_async()


def _split_token(token: str) -> tuple[str | None, str]:
    customer, _, method = token.rpartition("/")
    return customer or None, method


def _decline_of(exc: stripe.CardError) -> tuple[str, str]:
    error = _error_body(exc)
    code = exc.code or "card_declined"
    decline = error.get("decline_code")
    if code == "card_declined" and decline not in GENERIC_DECLINES:
        code = str(decline)
    return code, exc.user_message or "Your card was declined."


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _error_intent_id(exc: stripe.StripeError) -> str | None:
    intent = _error_body(exc).get("payment_intent")
    return intent.get("id") if isinstance(intent, dict) else None


def _raise_unsettled(exc: Exception, *, may_be_done: bool) -> NoReturn:
    """Raise what a Stripe error that is no decline means for us."""
    status = exc.http_status if isinstance(exc, stripe.StripeError) else None
    error: GatewayError
    if not isinstance(exc, stripe.StripeError):
        # The package reads the body outside its own error handling: a timeout or a dropped
        # connection there arrives bare, after the request was sent.
        error = GatewayOutcomeUnknown("timeout", f"Stripe's answer was lost: {type(exc).__name__}")
    elif isinstance(exc, stripe.RateLimitError):
        error = GatewayRetriableError(
            "rate_limited", "Stripe is rate limiting us", retry_after=_retry_after(exc)
        )
    elif isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        error = GatewayRetriableError(
            "gateway_auth_failed", "Stripe refused the tenant's secret key"
        )
    elif isinstance(exc, stripe.APIConnectionError) and never_sent(exc.__cause__):
        error = GatewayRetriableError("connection_failed", "Stripe could not be reached")
    elif isinstance(exc, stripe.APIConnectionError):
        error = GatewayOutcomeUnknown("timeout", "Stripe did not answer in time")
    elif isinstance(exc, stripe.IdempotencyError) or status == 409:
        error = GatewayOutcomeUnknown("in_progress", "Stripe has a call with this key in flight")
    elif status is not None and status >= 500:
        error = GatewayOutcomeUnknown("gateway_error", f"Stripe answered {status}")
    else:
        error = GatewayOutcomeUnknown("gateway_error", f"Stripe answered {status}")
    if not may_be_done and isinstance(error, GatewayOutcomeUnknown):
        # Nothing was at stake (a lookup, a card check): it is simply to be asked again.
        error = GatewayRetriableError(error.code, error.message)
    raise error from exc


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("Retry-After") or (exc.headers or {}).get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _with_key(intents: list[dict[str, Any]], idempotency_key: str) -> list[dict[str, Any]]:
    return [i for i in intents if (i.get("metadata") or {}).get(KEY_METADATA) == idempotency_key]
