"""A local fake of Stripe's API, as much of it as Recur's adapter uses, in Stripe's formats.

Form-encoded requests (`card[number]=...`, `metadata[k]=v`, `allowed_payment_method_types[0]=`),
JSON answers, `Authorization: Bearer <secret key>`, and Stripe's idempotency: a key replays its
first answer (`Idempotent-Replayed: true`), with other parameters it is a 400 idempotency_error,
and while its first request is in flight it is a 409. Declines are 402 card_errors carrying the
PaymentIntent or SetupIntent. Events are kept as Stripe sends them and signed with
`Stripe-Signature: t=...,v1=...` by `signed`.

Test cards: 4000000000000002 (generic decline), ...9995 (insufficient funds) and ...0119
(processing error) are refused when set up; 4000000000000341 sets up and is declined when
charged; any other Luhn-valid number works.
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import orjson
import stripe
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

SEARCH = re.compile(r"^metadata\['([^']+)'\]:'((?:[^'\\]|\\.)*)'$")


class StripeError(Exception):
    def __init__(self, status: int, error: dict[str, Any]):
        self.status, self.error = status, error


def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0]=v`) back into dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node: Any) -> Any:
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [lists(node[k]) for k in sorted(node, key=int)]
            return {k: lists(v) for k, v in node.items()}
        return node

    return lists(root)


class StripeFake:
    """Stripe, in memory; `url` once served."""

    def __init__(self, clock: Clock, api_key: str = "sk_test_fake_key"):
        self.clock = clock
        self.api_key = api_key
        self.faults = FaultInjector()
        self.url = ""
        self.payment_methods: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.setup_intents: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        # Every request: method, path, decoded parameters, Idempotency-Key.
        self.requests: list[dict[str, Any]] = []
        self._idempotent: dict[str, tuple[str, dict[str, Any], int, bytes]] = {}
        self._in_flight: set[str] = set()
        self._outcomes: dict[str, str] = {}  # payment method id -> "ok" / "decline_at_charge"
        self._ids = itertools.count(1)

    # serving

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.faults.middleware])
        app.router.add_post("/v1/payment_methods", self._endpoint(self._create_payment_method))
        app.router.add_post("/v1/customers", self._endpoint(self._create_customer))
        app.router.add_post("/v1/setup_intents", self._endpoint(self._create_setup_intent))
        app.router.add_get("/v1/payment_intents/search", self._endpoint(self._search_intents))
        app.router.add_get("/v1/payment_intents", self._endpoint(self._list_intents))
        app.router.add_post("/v1/payment_intents", self._endpoint(self._create_payment_intent))
        app.router.add_post("/v1/refunds", self._endpoint(self._create_refund))
        app.router.add_get("/v1/refunds", self._endpoint(self._list_refunds))
        return app

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[StripeFake]:
        """Serve the fake on loopback for the duration of the block."""
        async with serve(self.app(), self.faults) as url:
            self.url = url
            yield self

    def hold_in_flight(self, idempotency_key: str) -> None:
        """As if a request with this key were still being processed."""
        self._in_flight.add(idempotency_key)

    # what tests ask of it

    def intents_with_key(self, idempotency_key: str) -> list[dict[str, Any]]:
        """The PaymentIntents made with our key in their metadata: never more than one."""
        return [
            pi
            for pi in self.payment_intents.values()
            if pi["metadata"].get("recur_idempotency_key") == idempotency_key
        ]

    def event(self, type_: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = {
            "id": f"evt_{next(self._ids):014d}",
            "object": "event",
            "api_version": stripe.api_version,
            "created": self._now(),
            "livemode": False,
            "pending_webhooks": 1,
            "type": type_,
            "data": {"object": dict(obj)},
        }
        self.events.append(event)
        return event

    def last_event(self, type_: str) -> dict[str, Any]:
        return next(e for e in reversed(self.events) if e["type"] == type_)

    def signed(
        self, event: dict[str, Any], secret: str, timestamp: int | None = None
    ) -> tuple[dict[str, str], bytes]:
        """The headers and body Stripe would POST for `event`."""
        body = orjson.dumps(event)
        stamp = self._now() if timestamp is None else timestamp
        signature = stripe.WebhookSignature.generate_signature_header(
            body.decode(), secret, timestamp=stamp
        )
        return {"Content-Type": "application/json", "Stripe-Signature": signature}, body

    def open_dispute(self, payment_intent_id: str, *, status: str = "needs_response") -> str:
        intent = self.payment_intents[payment_intent_id]
        dispute = {
            "id": f"dp_{next(self._ids):014d}",
            "object": "dispute",
            "amount": intent["amount"],
            "currency": intent["currency"],
            "charge": intent["latest_charge"],
            "payment_intent": intent["id"],
            "reason": "fraudulent",
            "status": status,
            "created": self._now(),
        }
        self.disputes[dispute["id"]] = dispute
        self.event("charge.dispute.created", dispute)
        return str(dispute["id"])

    def close_dispute(self, dispute_id: str, status: str) -> None:
        self.disputes[dispute_id]["status"] = status
        self.event("charge.dispute.closed", self.disputes[dispute_id])

    # the protocol

    def _now(self) -> int:
        return int(self.clock.now().timestamp())

    def _endpoint(self, handler: Any) -> Any:
        async def endpoint(request: web.Request) -> web.Response:
            if request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return self._error(
                    401,
                    {
                        "type": "invalid_request_error",
                        "message": "Invalid API Key provided.",
                    },
                )
            if request.method == "GET":
                params = _nest(list(request.query.items()))
            else:
                params = _nest(parse_qsl((await request.read()).decode(), keep_blank_values=True))
            key = request.headers.get("Idempotency-Key")
            self.requests.append(
                {"method": request.method, "path": request.path, "params": params, "key": key}
            )
            if key is None or request.method != "POST":
                return self._answer(handler, params)
            fingerprint = f"{request.method} {request.path}"
            if key in self._in_flight:
                return self._error(
                    409,
                    {
                        "type": "invalid_request_error",
                        "code": "idempotency_key_in_use",
                        "message": "There is currently another in-progress request using "
                        "this Stripe-Idempotency-Key.",
                    },
                )
            if key in self._idempotent:
                first_fingerprint, first_params, status, body = self._idempotent[key]
                if (first_fingerprint, first_params) != (fingerprint, params):
                    return self._error(
                        400,
                        {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only be used with "
                            "the same parameters they were first used with.",
                        },
                    )
                return web.Response(
                    body=body,
                    status=status,
                    content_type="application/json",
                    headers={"Idempotent-Replayed": "true", "Idempotency-Key": key},
                )
            self._in_flight.add(key)
            try:
                response = self._answer(handler, params)
            finally:
                self._in_flight.discard(key)
            if response.status != 400:  # Stripe keeps no result of a request it refused
                assert isinstance(response.body, bytes)
                self._idempotent[key] = (fingerprint, params, response.status, response.body)
            return response

        return endpoint

    def _answer(self, handler: Any, params: dict[str, Any]) -> web.Response:
        try:
            return web.json_response(handler(params), dumps=lambda v: orjson.dumps(v).decode())
        except StripeError as exc:
            return self._error(exc.status, exc.error)

    @staticmethod
    def _error(status: int, error: dict[str, Any]) -> web.Response:
        return web.json_response({"error": error}, status=status)

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):014d}"

    def _create_payment_method(self, params: dict[str, Any]) -> dict[str, Any]:
        card = params.get("card") or {}
        number = str(card.get("number", ""))
        if params.get("type") != "card" or not luhn_valid(number):
            raise StripeError(
                402,
                {
                    "type": "card_error",
                    "code": "incorrect_number",
                    "param": "number",
                    "message": "Your card number is incorrect.",
                },
            )
        exp_month, exp_year = int(card["exp_month"]), int(card["exp_year"])
        now = self.clock.now()
        if (exp_year, exp_month) < (now.year, now.month):
            raise StripeError(
                402,
                {
                    "type": "card_error",
                    "code": "invalid_expiry_year",
                    "param": "exp_year",
                    "message": "Your card's expiration year is invalid.",
                },
            )
        method_id = self._new_id("pm")
        # Only what Stripe shows of a card is kept, and the test outcome of the number.
        self._outcomes[method_id] = DECLINED_AT_VERIFY.get(number) or (
            "decline_at_charge" if number in DECLINED_AT_CHARGE else "ok"
        )
        method = {
            "id": method_id,
            "object": "payment_method",
            "type": "card",
            "card": {
                "brand": brand_of(number),
                "last4": number[-4:],
                "exp_month": exp_month,
                "exp_year": exp_year,
                "funding": "credit",
            },
            "customer": None,
            "created": self._now(),
        }
        self.payment_methods[method_id] = method
        return method

    def _create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = {
            "id": self._new_id("cus"),
            "object": "customer",
            "description": params.get("description"),
            "created": self._now(),
        }
        self.customers[customer["id"]] = customer
        return customer

    def _method(self, method_id: str) -> dict[str, Any]:
        if method_id not in self.payment_methods:
            raise StripeError(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "payment_method",
                    "message": f"No such PaymentMethod: '{method_id}'",
                },
            )
        return self.payment_methods[method_id]

    def _create_setup_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        method = self._method(str(params.get("payment_method")))
        setup = {
            "id": self._new_id("seti"),
            "object": "setup_intent",
            "customer": params.get("customer"),
            "payment_method": method["id"],
            "usage": params.get("usage", "off_session"),
            "status": "succeeded",
            "created": self._now(),
        }
        outcome = self._outcomes[method["id"]]
        if outcome in ("generic", "insufficient_funds", "processing_error"):
            setup["status"] = "requires_payment_method"
            error: dict[str, Any] = {
                "type": "card_error",
                "code": "processing_error" if outcome == "processing_error" else "card_declined",
                "message": {
                    "generic": "Your card was declined.",
                    "insufficient_funds": "Your card has insufficient funds.",
                    "processing_error": "An error occurred while processing your card.",
                }[outcome],
            }
            if outcome != "processing_error":
                error["decline_code"] = "generic_decline" if outcome == "generic" else outcome
            self.setup_intents[setup["id"]] = setup
            raise StripeError(402, {**error, "setup_intent": setup})
        method["customer"] = params.get("customer")
        self.setup_intents[setup["id"]] = setup
        return setup

    def _create_payment_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = int(params.get("amount", 0))
        if amount <= 0:
            raise StripeError(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "parameter_invalid_integer",
                    "param": "amount",
                    "message": "This value must be greater than or equal to 1.",
                },
            )
        method = self._method(str(params.get("payment_method")))
        customer = params.get("customer")
        if method["customer"] is not None and customer != method["customer"]:
            raise StripeError(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "payment_method_not_available",
                    "message": "The PaymentMethod belongs to another Customer.",
                },
            )
        intent = {
            "id": self._new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "currency": params["currency"],
            "customer": customer,
            "payment_method": method["id"],
            "confirmation_method": "automatic",
            "metadata": params.get("metadata") or {},
            "status": "succeeded",
            "latest_charge": self._new_id("ch"),
            "last_payment_error": None,
            "amount_refunded": 0,
            "created": self._now(),
        }
        self.payment_intents[intent["id"]] = intent
        if self._outcomes[method["id"]] == "decline_at_charge":
            error = {
                "type": "card_error",
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": "Your card was declined.",
                "charge": intent["latest_charge"],
            }
            intent["status"] = "requires_payment_method"
            intent["last_payment_error"] = error
            self.event("payment_intent.payment_failed", intent)
            raise StripeError(402, {**error, "payment_intent": intent})
        intent["amount_received"] = amount
        self.event("payment_intent.succeeded", intent)
        return intent

    def _search_intents(self, params: dict[str, Any]) -> dict[str, Any]:
        match = SEARCH.match(str(params.get("query", "")))
        if match is None:
            raise StripeError(
                400,
                {
                    "type": "invalid_request_error",
                    "param": "query",
                    "message": "The fake only searches metadata['key']:'value'.",
                },
            )
        field, value = match.group(1), re.sub(r"\\(.)", r"\1", match.group(2))
        found = [pi for pi in self.payment_intents.values() if pi["metadata"].get(field) == value]
        return {
            "object": "search_result",
            "url": "/v1/payment_intents/search",
            "has_more": False,
            "next_page": None,
            "data": found[: int(params.get("limit", 10))],
        }

    def _list_intents(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = params.get("customer")
        found = [
            pi
            for pi in reversed(list(self.payment_intents.values()))
            if customer is None or pi["customer"] == customer
        ]
        limit = int(params.get("limit", 10))
        return {
            "object": "list",
            "url": "/v1/payment_intents",
            "has_more": len(found) > limit,
            "data": found[:limit],
        }

    def _list_refunds(self, params: dict[str, Any]) -> dict[str, Any]:
        """Newest first, of one charge or PaymentIntent when given, as Stripe lists them."""
        found = [
            refund
            for refund in reversed(list(self.refunds.values()))
            if params.get("charge") in (None, refund["charge"])
            and params.get("payment_intent") in (None, refund["payment_intent"])
        ]
        limit = int(params.get("limit", 10))
        return {
            "object": "list",
            "url": "/v1/refunds",
            "has_more": len(found) > limit,
            "data": found[:limit],
        }

    def _create_refund(self, params: dict[str, Any]) -> dict[str, Any]:
        intent_id = params.get("payment_intent")
        if intent_id is None and params.get("charge"):
            intent_id = next(
                (
                    i
                    for i, pi in self.payment_intents.items()
                    if pi["latest_charge"] == params["charge"]
                ),
                None,
            )
        intent = self.payment_intents.get(str(intent_id))
        if intent is None or intent["status"] != "succeeded":
            raise StripeError(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "payment_intent",
                    "message": f"No such payment_intent: '{intent_id}'",
                },
            )
        left = intent["amount_received"] - intent["amount_refunded"]
        amount = int(params.get("amount", left))
        if left <= 0:
            raise StripeError(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "charge_already_refunded",
                    "message": f"Charge {intent['latest_charge']} has already been refunded.",
                },
            )
        if amount > left:
            raise StripeError(
                400,
                {
                    "type": "invalid_request_error",
                    "code": "amount_too_large",
                    "param": "amount",
                    "message": f"Refund amount ({amount}) is greater than unrefunded amount "
                    f"on charge ({left}).",
                },
            )
        intent["amount_refunded"] += amount
        refund = {
            "id": self._new_id("re"),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "charge": intent["latest_charge"],
            "metadata": params.get("metadata") or {},
            "status": "succeeded",
            "created": self._now(),
        }
        self.refunds[refund["id"]] = refund
        self.event("refund.created", refund)
        return refund
