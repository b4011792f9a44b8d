"""The gateway's ASGI middleware: request ids, authentication and rate limits, idempotency.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) because every request passes through
all three: plain ASGI adds no task or stream copy per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recur.gateway.key_locks import KeyLocks
from recur.gateway.keys import KeyResolver
from recur.gateway.ratelimit import RateLimiter
from recur.gateway.tables import idempotency_keys
from recur.kit.clock import Clock
from recur.kit.db import Database, UnitOfWork, insert_ignoring_conflicts
from recur.kit.http import error_body
from recur.kit.ids import new_id
from recur.kit.request_id import request_id_var
from recur.kit.service_client import INTERNAL_TOKEN_HEADER

# What the gateway process resolved from the API key, sent with the internal token to the
# service it forwards the request to (and stripped from every request it receives).
TENANT_HEADER = "X-Recur-Tenant-Id"
API_KEY_ID_HEADER = "X-Recur-Api-Key-Id"

PUBLIC_PATHS = ("/docs", "/redoc", "/openapi.json", "/healthz", "/readyz", "/metrics")
# Payment gateways' webhooks carry no API key: the payments service verifies each by the
# gateway's own signature, with the secret of the tenant whose payment it names.
GATEWAY_WEBHOOK = re.compile(r"^/v1/gateways/[^/]+/webhooks/?$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,200}$")


async def _send_json(send: Send, status: int, body: dict[str, Any], headers=()) -> None:
    payload = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class RequestIdMiddleware:
    """Every response carries `X-Request-Id`: the caller's, when it sent a sane one."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class InputGuardMiddleware:
    """Refuses what no endpoint can store: NUL characters anywhere, and oversized bodies.

    PostgreSQL text cannot hold a NUL while SQLite can; refusing it here makes both databases
    answer the same 400 instead of one of them failing deep inside a transaction.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int = 1_000_000):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = scope.get("raw_path", b"") + b"?" + scope.get("query_string", b"")
        if b"\x00" in target or b"%00" in target:
            await _refuse_nul(send)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                await _send_json(
                    send,
                    413,
                    error_body(
                        "invalid_request_error",
                        "body_too_large",
                        f"the request body is over {self.max_body_bytes} bytes",
                    ),
                )
                return
        if b"\\u0000" in body or b"\x00" in body:
            await _refuse_nul(send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # only the disconnect is left
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _refuse_nul(send: Send) -> None:
    await _send_json(
        send,
        400,
        error_body("invalid_request_error", "parameter_invalid", "NUL characters are not allowed"),
    )


class AuthMiddleware:
    """Resolves the tenant from the bearer key, then spends one token of the key's bucket.

    With `internal_token` (a service's process), a request the gateway process forwards,
    carrying that token and the tenant and key the gateway resolved, is taken as resolved:
    the gateway has already checked the key and spent its token, and a second token spent here
    would halve every key's rate limit."""

    def __init__(
        self,
        app: ASGIApp,
        resolver: KeyResolver,
        limiter: RateLimiter,
        internal_token: str | None = None,
    ):
        self.app = app
        self.resolver = resolver
        self.limiter = limiter
        self._internal_token = internal_token.encode() if internal_token else None

    def _resolved_by_gateway(self, scope: Scope) -> tuple[str, str] | None:
        if self._internal_token is None:
            return None
        token = _header(scope, INTERNAL_TOKEN_HEADER.lower().encode())
        tenant_id = _header(scope, TENANT_HEADER.lower().encode())
        key_id = _header(scope, API_KEY_ID_HEADER.lower().encode())
        if token is None or not tenant_id or not key_id:
            return None
        if not hmac.compare_digest(token.encode("latin-1"), self._internal_token):
            return None
        return tenant_id, key_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"].startswith(PUBLIC_PATHS)
            or GATEWAY_WEBHOOK.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        forwarded = self._resolved_by_gateway(scope)
        if forwarded is not None:
            state = scope.setdefault("state", {})
            state["tenant_id"], state["api_key_id"] = forwarded
            await self.app(scope, receive, send)
            return
        auth = _header(scope, b"authorization") or ""
        scheme, _, secret = auth.partition(" ")
        resolved = None
        if scheme.lower() == "bearer" and secret.strip():
            resolved = await self.resolver.resolve(secret.strip())
        if resolved is None:
            message = "invalid API key" if auth else "no API key: send Authorization: Bearer <key>"
            await _send_json(
                send,
                401,
                error_body("authentication_error", "invalid_api_key", message),
                [(b"www-authenticate", b"Bearer")],
            )
            return
        tenant_id, key_id = resolved
        decision = await self.limiter.take(key_id)
        limit_headers = [
            (b"ratelimit-limit", str(getattr(self.limiter, "burst", 0)).encode()),
            (b"ratelimit-remaining", str(decision.remaining).encode()),
        ]
        if not decision.allowed:
            await _send_json(
                send,
                429,
                error_body("rate_limit_error", "rate_limited", "too many requests"),
                [(b"retry-after", str(decision.retry_after).encode()), *limit_headers],
            )
            return
        state = scope.setdefault("state", {})
        state["tenant_id"] = tenant_id
        state["api_key_id"] = key_id

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *limit_headers]
            await send(message)

        await self.app(scope, receive, send_with_limits)


_KEY_IN_USE = error_body(
    "idempotency_error",
    "idempotency_key_in_use",
    "a request with this Idempotency-Key is still being processed",
    "Idempotency-Key",
)


class IdempotencyMiddleware:
    """`Idempotency-Key` on a POST: the same key and body replay the first response; the same
    key with another body, or while the first request still runs, is a 409. A key whose first
    request died with its process is carried out again (see `key_locks`)."""

    def __init__(self, app: ASGIApp, db: Database, clock: Clock, ttl: timedelta):
        self.app = app
        self.db = db
        self.clock = clock
        self.ttl = ttl
        self.locks = KeyLocks(db)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _header(scope, b"idempotency-key") if scope["type"] == "http" else None
        tenant_id = scope.get("state", {}).get("tenant_id") if key is not None else None
        if key is None or scope["method"] != "POST" or tenant_id is None:
            await self.app(scope, receive, send)
            return
        if not 1 <= len(key) <= 255:
            await _send_json(
                send,
                400,
                error_body(
                    "invalid_request_error",
                    "idempotency_key_invalid",
                    "Idempotency-Key must be 1 to 255 characters",
                    "Idempotency-Key",
                ),
            )
            return

        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        digest = hashlib.sha256(
            b"\n".join([scope["path"].encode(), scope.get("query_string", b""), body])
        ).hexdigest()

        held = await self.locks.acquire(tenant_id, key)
        if held is False:
            await _send_json(send, 409, _KEY_IN_USE)
            return
        try:
            await self._carry_out(scope, send, tenant_id, key, body, digest, abandoned_ok=held)
        finally:
            if held:
                await self.locks.release(tenant_id, key)

    async def _carry_out(
        self,
        scope: Scope,
        send: Send,
        tenant_id: str,
        key: str,
        body: bytes,
        digest: str,
        abandoned_ok: bool | None,
    ) -> None:
        stored = await self._claim(tenant_id, key, digest)
        if stored is not None and not (
            # In flight, yet nobody holds its lock: the process running it died. Ours now.
            abandoned_ok and stored.status_code is None and stored.request_hash == digest
        ):
            await self._answer_existing(send, stored, digest)
            return

        captured: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

        async def replay_receive() -> Message:
            nonlocal body
            chunk, body = body, b""
            return {"type": "http.request", "body": chunk, "more_body": False}

        settled = False

        async def capture(message: Message) -> None:
            nonlocal settled
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                captured["headers"] = message.get("headers", [])
            elif message["type"] == "http.response.body":
                captured["body"] += message.get("body", b"")
                if not message.get("more_body", False):
                    # Stored before the client has the whole response: a replay it sends as
                    # soon as it has read it finds the key answered, not still in flight.
                    settled = True
                    await self._settle(tenant_id, key, captured)
            await send(message)

        try:
            await self.app(scope, replay_receive, capture)
        finally:
            if not settled:
                await self._settle(tenant_id, key, captured)

    async def _claim(self, tenant_id: str, key: str, digest: str) -> Any:
        """Insert the key as in flight; return the stored row when the key was used before."""
        for _ in range(2):
            async with UnitOfWork(self.db) as uow:
                inserted = await uow.execute(
                    insert_ignoring_conflicts(uow.conn, idempotency_keys).values(
                        tenant_id=tenant_id, key=key, request_hash=digest, created=self.clock.now()
                    )
                )
                if inserted.rowcount == 1:
                    await uow.commit()
                    return None
                row = await uow.fetch_one(
                    sa.select(idempotency_keys).where(
                        idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == key
                    )
                )
                if row is not None and row.created >= self.clock.now() - self.ttl:
                    return row
                # Expired: forget it and claim the key afresh.
                await uow.execute(
                    sa.delete(idempotency_keys).where(
                        idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == key
                    )
                )
                await uow.commit()
        return None

    async def _answer_existing(self, send: Send, row: Any, digest: str) -> None:
        if row.request_hash != digest:
            await _send_json(
                send,
                409,
                error_body(
                    "idempotency_error",
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another request",
                    "Idempotency-Key",
                ),
            )
            return
        if row.status_code is None:
            await _send_json(send, 409, _KEY_IN_USE)
            return
        await send(
            {
                "type": "http.response.start",
                "status": row.status_code,
                "headers": [
                    (b"content-type", (row.content_type or "application/json").encode()),
                    (b"content-length", str(len(row.response_body or b"")).encode()),
                    (b"idempotent-replayed", b"true"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": row.response_body or b""})

    async def _settle(self, tenant_id: str, key: str, captured: dict[str, Any]) -> None:
        where = (idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == key)
        async with UnitOfWork(self.db) as uow:
            if captured["status"] >= 500:
                # Our fault, not the caller's: let the same key try again.
                await uow.execute(sa.delete(idempotency_keys).where(*where))
            else:
                content_type = next(
                    (v.decode() for k, v in captured["headers"] if k.lower() == b"content-type"),
                    "application/json",
                )
                await uow.execute(
                    sa.update(idempotency_keys)
                    .where(*where)
                    .values(
                        status_code=captured["status"],
                        response_body=captured["body"],
                        content_type=content_type,
                    )
                )
            await uow.commit()

    async def purge_expired(self) -> int:
        async with UnitOfWork(self.db) as uow:
            result = await uow.execute(
                sa.delete(idempotency_keys).where(
                    idempotency_keys.c.created < self.clock.now() - self.ttl
                )
            )
            await uow.commit()
        return result.rowcount
