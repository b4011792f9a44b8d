"""Domain errors. They know nothing of HTTP: `recur.kit.http` maps them to status codes."""

from __future__ import annotations

from typing import Any


class RecurError(Exception):
    """Base of every error a caller can act on. `code` is stable and machine-readable."""

    code = "error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequest(RecurError):
    """The request is malformed or impossible (bad field, unknown currency, too large a refund)."""

    code = "invalid_request"


class NotFound(RecurError):
    """No such object for this tenant. Another tenant's object is also not found."""

    code = "resource_missing"


class Conflict(RecurError):
    """The object's state forbids the change (e.g. cancelling a canceled subscription)."""

    code = "state_conflict"


class PaymentDeclined(RecurError):
    """The gateway declined the charge. `payment` is the failed payment, recorded before raising."""

    code = "card_declined"

    def __init__(self, message: str, *, code: str, payment: Any = None, param: str | None = None):
        super().__init__(message, code=code, param=param)
        self.payment = payment


class Unauthenticated(RecurError):
    code = "invalid_api_key"


class RateLimited(RecurError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ServiceUnavailable(Exception):
    """Another Recur service could not answer (down, timed out, refused our internal token).

    Not a RecurError: the caller can do nothing about it but try again later, so it leaves
    as a 503, never as a 4xx that would blame the request.
    """
