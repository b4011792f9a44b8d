"""The edge: domain errors to HTTP status codes and the error object, and request helpers."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DataError, DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from recur.kit.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PaymentDeclined,
    RateLimited,
    RecurError,
    ServiceUnavailable,
    Unauthenticated,
)

log = logging.getLogger("recur.http")

# The one table from domain errors to (status, error type).
ERROR_STATUS: dict[type[RecurError], tuple[int, str]] = {
    InvalidRequest: (400, "invalid_request_error"),
    NotFound: (404, "invalid_request_error"),
    Conflict: (409, "invalid_request_error"),
    PaymentDeclined: (402, "card_error"),
    Unauthenticated: (401, "authentication_error"),
    RateLimited: (429, "rate_limit_error"),
}


def error_body(type: str, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"type": type, "code": code, "message": message, "param": param}}


def error_response(exc: RecurError) -> JSONResponse:
    status, type_ = next(
        (v for cls, v in ERROR_STATUS.items() if isinstance(exc, cls)),
        (400, "invalid_request_error"),
    )
    body = error_body(type_, exc.code, exc.message, exc.param)
    headers = {}
    if isinstance(exc, PaymentDeclined) and exc.payment is not None:
        body["error"]["payment"] = exc.payment
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(body, status_code=status, headers=headers)


def _param_of(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or None


async def _on_recur_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RecurError)
    return error_response(exc)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    # An unknown parameter is named first, whatever else is wrong: it is the likelier mistake.
    unknown = [e for e in errors if e.get("type") == "extra_forbidden"]
    first = (unknown or errors or [{"loc": (), "msg": "invalid request"}])[0]
    param = _param_of(tuple(first.get("loc", ())))
    if unknown:
        body = error_body(
            "invalid_request_error",
            "parameter_unknown",
            f"received unknown parameter: {param}",
            param,
        )
        return JSONResponse(body, status_code=400)
    message = str(first.get("msg", "invalid request"))
    if param:
        message = f"{param}: {message}"
    body = error_body("invalid_request_error", "parameter_invalid", message, param)
    return JSONResponse(body, status_code=400)


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    body = error_body("invalid_request_error", code, str(exc.detail))
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _on_data_error(_request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value the schemas let through (a NUL character, which PostgreSQL
    # text cannot hold): the caller's input, so a 400; the transaction was rolled back.
    log.info("database refused a value: %s", type(exc).__name__)
    body = error_body(
        "invalid_request_error", "parameter_invalid", "a value in the request cannot be stored"
    )
    return JSONResponse(body, status_code=400)


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if not exc.connection_invalidated:
        return await _on_unexpected(request, exc)
    # The database connection broke off under the request (a restart, a failover): its
    # transaction was rolled back, and the pool replaces the connection. Worth retrying.
    log.warning("database connection lost: %s", type(exc.orig).__name__)
    body = error_body("api_error", "service_unavailable", "the database is unavailable")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


async def _on_service_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    # Another service could not answer: ours to fix, and worth retrying, never the caller's 4xx.
    log.warning("service unavailable: %s", exc)
    body = error_body("api_error", "service_unavailable", "a Recur service is unavailable")
    return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return JSONResponse(error_body("api_error", "internal_error", "internal error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as the documented error object."""
    app.add_exception_handler(RecurError, _on_recur_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DataError, _on_data_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(ServiceUnavailable, _on_service_unavailable)
    app.add_exception_handler(Exception, _on_unexpected)


_bearer = HTTPBearer(auto_error=False, description="A secret API key: `recur keys create`")


def current_tenant(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The tenant the gateway resolved from the API key."""
    tenant_id = getattr(request.state, "tenant_id", None)
    if tenant_id is None:
        raise Unauthenticated("no valid API key given: send Authorization: Bearer <key>")
    return str(tenant_id)


TenantId = Annotated[str, Depends(current_tenant)]


def get_runtime(request: Request) -> Any:
    """The process's runtime (database, event bus, clock, clients), set up at start-up."""
    return request.app.state.runtime


# Services annotate it with their view of the runtime; kit knows nothing of services.
RuntimeDep = Annotated[Any, Depends(get_runtime)]
