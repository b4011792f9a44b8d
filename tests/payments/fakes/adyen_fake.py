"""A local fake of Adyen's Checkout API v71, as much of it as Recur's adapter uses.

JSON in and out, `X-API-Key` auth, the documented idempotency (`Idempotency-Key`: the first
answer to a key is replayed, echoing the header; errorCode 704 while the first is in flight),
`resultCode` Authorised / Refused with `refusalReason` and `refusalReasonCode`, zero-value
payments storing a card (`tokenization.storedPaymentMethodId`), refunds answered `received`,
and standard notifications signed with the documented HMAC (`additionalData.hmacSignature`).

A key reused with another body gets the first answer too, as Adyen documents; the fake counts
those in `mismatches`, which the adapter must never cause (its lookups resend the same body).

Test cards are those of `server`: refused at the zero-value check, or at the charge.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from recur.kit.clock import Clock

from .server import (
    DECLINED_AT_CHARGE,
    DECLINED_AT_VERIFY,
    FaultInjector,
    brand_of,
    luhn_valid,
    serve,
)

VARIANTS = {"visa": "visa", "mastercard": "mc", "amex": "amex", "unknown": "unknown"}
REFUSED = {
    "generic": ("Refused", "2"),
    "insufficient_funds": ("Not enough balance", "12"),
    "processing_error": ("Acquirer Error", "4"),
    "expired": ("Expired Card", "6"),
}
SIGNED_FIELDS = (
    "pspReference",
    "originalReference",
    "merchantAccountCode",
    "merchantReference",
    "value",
    "currency",
    "eventCode",
    "success",
)


def _error(status: int, code: str, message: str, error_type: str) -> web.Response:
    return web.json_response(
        {"status": status, "errorCode": code, "message": message, "errorType": error_type},
        status=status,
    )


def sign(item: dict[str, Any], hmac_key: str) -> str:
    """Adyen's notification signature, written from its documentation."""
    values = {**item, **{k: item.get("amount", {}).get(k) for k in ("value", "currency")}}
    payload = ":".join("" if values.get(f) is None else str(values[f]) for f in SIGNED_FIELDS)
    digest = hmac.new(binascii.a2b_hex(hmac_key), payload.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode()


class AdyenFake:
    """Adyen's Checkout API, in memory; `url` once served."""

    def __init__(
        self,
        clock: Clock,
        api_key: str = "AQE_fake_api_key",
        merchant_account: str = "RecurTestECOM",
    ):
        self.clock = clock
        self.api_key = api_key
        self.merchant_account = merchant_account
        self.faults = FaultInjector()
        self.url = ""
        self.payments: dict[str, dict[str, Any]] = {}  # pspReference -> payment
        self.refunds: dict[str, dict[str, Any]] = {}
        self.stored: dict[tuple[str, str], dict[str, Any]] = {}  # (shopper, id) -> card
        self.notifications: list[dict[str, Any]] = []
        # Every request: path, JSON body, Idempotency-Key.
        self.requests: list[dict[str, Any]] = []
        self.mismatches = 0
        # The resultCode the next payment gets instead of its card's (Received, Error...).
        self.next_result: str | None = None
        self._idempotent: dict[str, tuple[bytes, int, bytes]] = {}
        self._in_flight: set[str] = set()
        self._ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.faults.middleware])
        app.router.add_post("/v71/payments", self._endpoint(self._payment))
        app.router.add_post("/v71/payments/{psp}/refunds", self._endpoint(self._refund))
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[AdyenFake]:
        """Serve the fake on loopback for the duration of the block."""
        async with serve(self.app(), self.faults) as url:
            self.url = url
            yield self

    def hold_in_flight(self, idempotency_key: str) -> None:
        """As if a request with this key were still being processed."""
        self._in_flight.add(idempotency_key)

    def payments_with_reference(self, reference: str) -> list[dict[str, Any]]:
        """Payments made with this merchant reference (our idempotency key): one at most."""
        return [p for p in self.payments.values() if p["reference"] == reference]

    def notification(
        self,
        event_code: str,
        psp_reference: str,
        *,
        success: bool = True,
        original_reference: str | None = None,
        merchant_reference: str = "",
        amount: int = 0,
        currency: str = "EUR",
        reason: str = "",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A NotificationRequestItem as Adyen sends it (unsigned)."""
        item: dict[str, Any] = {
            "additionalData": dict(extra or {}),
            "amount": {"currency": currency, "value": amount},
            "eventCode": event_code,
            "eventDate": self.clock.now().isoformat(),
            "merchantAccountCode": self.merchant_account,
            "merchantReference": merchant_reference,
            "paymentMethod": "visa",
            "pspReference": psp_reference,
            "reason": reason,
            "success": "true" if success else "false",
        }
        if original_reference is not None:
            item["originalReference"] = original_reference
        self.notifications.append(item)
        return item

    @staticmethod
    def signed(
        item: dict[str, Any], hmac_key: str, headers: dict[str, str] | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body Adyen would POST for one notification item."""
        signed = {**item, "additionalData": {**item["additionalData"], "hmacSignature": ""}}
        signed["additionalData"]["hmacSignature"] = sign(item, hmac_key)
        body = orjson.dumps(
            {"live": "false", "notificationItems": [{"NotificationRequestItem": signed}]}
        )
        return {"Content-Type": "application/json", **(headers or {})}, body

    def _endpoint(self, handler: Any) -> Any:
        async def endpoint(request: web.Request) -> web.Response:
            if request.headers.get("X-API-Key") != self.api_key:
                return _error(401, "000", "HTTP Status Response - Unauthorized", "security")
            raw = await request.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return _error(400, "702", "Structure of the request is invalid", "validation")
            if body.get("merchantAccount") != self.merchant_account:
                return _error(403, "901", "Invalid Merchant Account", "security")
            key = request.headers.get("Idempotency-Key")
            self.requests.append({"path": request.path, "body": body, "key": key})
            if key is None:
                return handler(request, body)
            if key in self._in_flight:
                return _error(422, "704", "request already processed or in progress", "validation")
            if key in self._idempotent:
                first_body, status, answer = self._idempotent[key]
                if orjson.loads(first_body) != body:
                    self.mismatches += 1
                return web.Response(
                    body=answer,
                    status=status,
                    content_type="application/json",
                    headers={"Idempotency-Key": key},
                )
            self._in_flight.add(key)
            try:
                response = handler(request, body)
            finally:
                self._in_flight.discard(key)
            assert isinstance(response.body, bytes)
            self._idempotent[key] = (raw, response.status, response.body)
            response.headers["Idempotency-Key"] = key
            return response

        return endpoint

    def _psp(self) -> str:
        return f"{next(self._ids):016d}"

    def _payment(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        amount = body.get("amount") or {}
        if not isinstance(amount.get("value"), int) or not amount.get("currency"):
            return _error(422, "100", "Required field 'amount' is not provided.", "validation")
        method = body.get("paymentMethod") or {}
        psp = self._psp()
        if "number" in method:
            return self._verify(body, method, psp)
        card = self.stored.get(
            (body.get("shopperReference", ""), method.get("storedPaymentMethodId", ""))
        )
        if card is None:
            return _error(422, "800", "Contract not found", "validation")
        if body.get("shopperInteraction") != "ContAuth" or not body.get("recurringProcessingModel"):
            return _error(422, "130", "Stored payments need ContAuth and a model", "validation")
        answer: dict[str, Any] = {
            "pspReference": psp,
            "merchantReference": body["reference"],
            "amount": amount,
            "resultCode": "Authorised",
        }
        if card["outcome"] == "decline_at_charge":
            answer |= {
                "resultCode": "Refused",
                "refusalReason": "Refused",
                "refusalReasonCode": "2",
            }
        if self.next_result is not None:
            answer["resultCode"], self.next_result = self.next_result, None
        self.payments[psp] = {
            "reference": body["reference"],
            "amount": amount["value"],
            "currency": amount["currency"],
            "result": answer["resultCode"],
            "refunded": 0,
        }
        self.notification(
            "AUTHORISATION",
            psp,
            success=answer["resultCode"] == "Authorised",
            merchant_reference=body["reference"],
            amount=amount["value"],
            currency=amount["currency"],
            reason=str(answer.get("refusalReason", "")),
        )
        return web.json_response(answer)

    def _verify(self, body: dict[str, Any], method: dict[str, Any], psp: str) -> web.Response:
        number = str(method.get("number", ""))
        if not luhn_valid(number):
            return _error(422, "101", "Invalid card number", "validation")
        now = self.clock.now()
        expired = (int(method["expiryYear"]), int(method["expiryMonth"])) < (now.year, now.month)
        refusal = "expired" if expired else DECLINED_AT_VERIFY.get(number)
        if refusal is not None:
            reason, code = REFUSED[refusal]
            return web.json_response(
                {
                    "pspReference": psp,
                    "merchantReference": body.get("reference"),
                    "resultCode": "Refused",
                    "refusalReason": reason,
                    "refusalReasonCode": code,
                }
            )
        stored_id = f"S{next(self._ids):015d}"
        shopper = str(body.get("shopperReference", ""))
        self.stored[(shopper, stored_id)] = {
            "outcome": "decline_at_charge" if number in DECLINED_AT_CHARGE else "ok",
            "brand": brand_of(number),
        }
        return web.json_response(
            {
                "pspReference": psp,
                "merchantReference": body.get("reference"),
                "resultCode": "Authorised",
                "amount": body["amount"],
                "additionalData": {
                    "tokenization.storedPaymentMethodId": stored_id,
                    "tokenization.shopperReference": shopper,
                    "tokenization.store.operationType": "created",
                    "paymentMethod": VARIANTS[brand_of(number)],
                    "cardSummary": number[-4:],
                },
            }
        )

    def _refund(self, request: web.Request, body: dict[str, Any]) -> web.Response:
        original = request.match_info["psp"]
        payment = self.payments.get(original)
        if payment is None or payment["result"] != "Authorised":
            return _error(
                422, "167", "Original pspReference required for this operation", "validation"
            )
        amount = body.get("amount") or {}
        psp = self._psp()
        refund = {
            "merchantAccount": self.merchant_account,
            "paymentPspReference": original,
            "pspReference": psp,
            "reference": body.get("reference"),
            "status": "received",
            "amount": amount,
        }
        self.refunds[psp] = refund
        # Adyen answers at once and decides later: too much is refused in the REFUND webhook.
        fits = payment["refunded"] + amount["value"] <= payment["amount"]
        if fits:
            payment["refunded"] += amount["value"]
        self.notification(
            "REFUND",
            psp,
            success=fits,
            original_reference=original,
            merchant_reference=str(body.get("reference", "")),
            amount=amount["value"],
            currency=amount["currency"],
            reason="" if fits else "Insufficient balance on payment",
        )
        return web.json_response(refund, status=201)
