"""Calls from one Recur service to another over HTTP, and the internal endpoints answering them.

A service's HTTP client (e.g. `customers/http.py`) implements the same typed interface as its
in-process client; every call is a POST of JSON to `/internal/<service>/<method>` on the
service's process, carrying the tenant id in the body and the shared internal token in a
header. The answer is the method's return value as JSON, or the documented error object, which
is raised again here as the same domain error with the same code, param and message.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, TypeVar

import aiohttp
import orjson
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from pydantic_core import to_json
from starlette.types import ASGIApp, Receive, Scope, Send

from recur.kit.errors import (
    InvalidRequest,
    PaymentDeclined,
    RateLimited,
    RecurError,
    ServiceUnavailable,
    Unauthenticated,
)
from recur.kit.http import ERROR_STATUS, error_body
from recur.kit.request_id import current_request_id

T = TypeVar("T")

INTERNAL_PREFIX = "/internal/"
INTERNAL_TOKEN_HEADER = "X-Recur-Internal-Token"  # noqa: S105 - a header name, not a secret

# The statuses a service answers a valid internal call with, back to the error they stand for.
# 401 and 429 are left out: the internal endpoints have neither API keys nor rate limits, so
# they mean a misconfigured deployment (a wrong token), which is ours to fix.
_ERROR_OF_STATUS: dict[int, type[RecurError]] = {
    status: cls
    for cls, (status, _type) in ERROR_STATUS.items()
    if cls not in (Unauthenticated, RateLimited)
}

ObjectId = Annotated[str, Field(min_length=1, max_length=64)]


class TenantScoped(BaseModel):
    """The body of an internal call made on behalf of one tenant."""

    tenant_id: ObjectId


class ServiceSession:
    """The process's one aiohttp session to the other services, opened on first use (it must
    be opened inside the event loop) and closed with the runtime."""

    def __init__(self, timeout_seconds: float):
        self._timeout = aiohttp.ClientTimeout(
            total=timeout_seconds, sock_connect=min(timeout_seconds, 5.0)
        )
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        """The open session, opened now if this is the first call."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64),
            )
        return self._session

    async def close(self) -> None:
        """Close the session and its connections; the next call would open a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None


class ServiceClient:
    """One service's internal endpoints, at one base URL."""

    def __init__(self, service: str, base_url: str, session: ServiceSession, token: str | None):
        self.service = service
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._token = token

    async def call(
        self, method: str, body: BaseModel | dict[str, Any], result: TypeAdapter[T]
    ) -> T:
        """POST `body` to the service's `method` and return its answer as `result`'s type.

        Raises the service's domain error as it raised it, or ServiceUnavailable when the
        service cannot be reached or answers with anything but its documented errors.
        """
        url = f"{self.base_url}{INTERNAL_PREFIX}{self.service}/{method}"
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers[INTERNAL_TOKEN_HEADER] = self._token
        request_id = current_request_id()
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        try:
            async with self._session.get().post(url, data=to_json(body), headers=headers) as resp:
                status, payload = resp.status, await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ServiceUnavailable(
                f"{self.service} at {self.base_url} did not answer {method}: "
                f"{type(exc).__name__} {exc}"
            ) from exc
        if status == 200:
            try:
                return result.validate_json(payload)
            except ValidationError as exc:
                raise ServiceUnavailable(
                    f"{self.service} answered {method} with an unexpected body"
                ) from exc
        raise decode_error(self.service, method, status, payload)


def decode_error(service: str, method: str, status: int, payload: bytes) -> Exception:
    """The exception a service's error answer stands for: the domain error it raised, or
    ServiceUnavailable for anything that is not the caller's fault."""
    error_class = _ERROR_OF_STATUS.get(status)
    try:
        error = orjson.loads(payload)["error"]
        code, message, param = error["code"], error["message"], error.get("param")
    except (orjson.JSONDecodeError, KeyError, TypeError):
        error_class, error = None, {}
    if error_class is None:
        detail = error.get("message") if isinstance(error, dict) else None
        return ServiceUnavailable(f"{service} answered {method} with {status}: {detail or '-'}")
    if error_class is PaymentDeclined:
        return PaymentDeclined(message, code=code, param=param, payment=error.get("payment"))
    if not issubclass(error_class, RecurError):  # pragma: no cover - the table holds no other
        return InvalidRequest(message, code=code, param=param)
    return error_class(message, code=code, param=param)


class InternalTokenMiddleware:
    """Only callers holding the shared internal token reach `/internal/...`; everyone else,
    and everyone when no token is configured, gets a 401 before the body is even read."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(INTERNAL_PREFIX):
            await self.app(scope, receive, send)
            return
        wanted = INTERNAL_TOKEN_HEADER.lower().encode()
        given = next((v for k, v in scope["headers"] if k == wanted), None)
        if self._token is None or given is None or not hmac.compare_digest(given, self._token):
            message = (
                "internal endpoints are disabled: RECUR_INTERNAL_TOKEN is not set"
                if self._token is None
                else f"a valid {INTERNAL_TOKEN_HEADER} header is required"
            )
            payload = orjson.dumps(
                error_body("authentication_error", "invalid_internal_token", message)
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        await self.app(scope, receive, send)
