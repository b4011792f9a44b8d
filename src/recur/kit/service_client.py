"""Calls from one Recur service to another over HTTP, and the internal endpoints answering them.

A service's HTTP client (e.g. `customers/http.py`) implements the same typed interface as its
in-process client; every call is a POST of JSON to `/internal/<service>/<method>` on one of the
service's processes, carrying the tenant id in the body and the shared internal token in a
header. The answer is the method's return value as JSON, or the documented error object, which
is raised again here as the same domain error with the same code, param and message.

A service may run in several instances: calls take them in turn (round robin). A call whose
connection could not be made (refused, connect timeout) never left, so it goes to the next
instance, and the one that failed is passed over for a few seconds. A call that was sent but got
no response (the connection reset, or timed out) may have been carried out: it goes to another
instance only when the method is one the service declares safe to repeat (its client's
IDEMPOTENT_CALLS: reads, and writes keyed so that a second one changes nothing and answers the
same). A response that breaks off before its body is read counts as no answer.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Collection, Sequence
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

log = logging.getLogger("recur.service_client")

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
                # Idle connections are dropped before uvicorn's 5 s keep-alive closes them from
                # the other side: a call sent on a connection being closed gets no answer.
                connector=aiohttp.TCPConnector(limit=256, limit_per_host=64, keepalive_timeout=4),
            )
        return self._session

    async def close(self) -> None:
        """Close the session and its connections; the next call would open a new one."""
        if self._session is not None:
            await self._session.close()
            self._session = None


# How long an instance whose connection failed is passed over (tried last) before calls go
# to it again in turn.
PASS_OVER_SECONDS = 5.0


class _NotSent(Exception):
    """The connection could not be made: the call never reached the instance."""


class _NoAnswer(Exception):
    """The call was sent, or may have been, and no response came back."""


class ServiceClient:
    """One service's internal endpoints, at the base URLs of its instances."""

    def __init__(
        self,
        service: str,
        base_urls: str | Sequence[str],
        session: ServiceSession,
        token: str | None,
        idempotent_calls: Collection[str] = (),
        now: Callable[[], float] = time.monotonic,
    ):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError(f"no instance of {service}")
        self.service = service
        self.base_urls = [url.rstrip("/") for url in urls]
        self.idempotent_calls = frozenset(idempotent_calls)
        self._session = session
        self._token = token
        self._now = now
        self._next = 0
        self._passed_over: dict[str, float] = {}  # instance -> until when

    def _turn(self) -> list[str]:
        """The instances in the order this call tries them: round robin, the ones that failed
        lately last."""
        count = len(self.base_urls)
        start, self._next = self._next, (self._next + 1) % count
        turn = [self.base_urls[(start + step) % count] for step in range(count)]
        now = self._now()
        return sorted(turn, key=lambda url: self._passed_over.get(url, 0.0) > now)

    async def call(
        self, method: str, body: BaseModel | dict[str, Any], result: TypeAdapter[T]
    ) -> T:
        """POST `body` to the service's `method` and return its answer as `result`'s type.

        Raises the service's domain error as it raised it, or ServiceUnavailable when no
        instance of the service can be reached or one answers with anything but its
        documented errors.
        """
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers[INTERNAL_TOKEN_HEADER] = self._token
        request_id = current_request_id()
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        data = to_json(body)
        failures = []
        for base_url in self._turn():
            try:
                status, payload = await self._post(base_url, method, data, headers)
            except _NotSent as failure:
                self._passed_over[base_url] = self._now() + PASS_OVER_SECONDS
                failures.append(str(failure))
                log.warning("%s; passed over for %.0f s", failure, PASS_OVER_SECONDS)
                continue
            except _NoAnswer as failure:
                failures.append(str(failure))
                if method not in self.idempotent_calls:
                    raise ServiceUnavailable("; ".join(failures)) from failure.__cause__
                self._passed_over[base_url] = self._now() + PASS_OVER_SECONDS
                log.warning("%s; sent again elsewhere (idempotent)", failure)
                continue
            self._passed_over.pop(base_url, None)
            if status == 200:
                try:
                    return result.validate_json(payload)
                except ValidationError as exc:
                    raise ServiceUnavailable(
                        f"{self.service} answered {method} with an unexpected body"
                    ) from exc
            raise decode_error(self.service, method, status, payload)
        raise ServiceUnavailable("; ".join(failures))

    async def _post(
        self, base_url: str, method: str, data: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        url = f"{base_url}{INTERNAL_PREFIX}{self.service}/{method}"
        where = f"{self.service} at {base_url} did not answer {method}"
        try:
            response = await self._session.get().post(url, data=data, headers=headers)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise _NotSent(f"{where}: {type(exc).__name__} {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _NoAnswer(f"{where}: {type(exc).__name__} {exc}") from exc
        # The response has started but may break off before its body is read (the instance
        # died between the two): the call was carried out, or may have been, and that is
        # what _NoAnswer says; a call safe to repeat is then sent again elsewhere.
        try:
            async with response:
                return response.status, await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _NoAnswer(f"{where} in full: {type(exc).__name__} {exc}") from exc


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
