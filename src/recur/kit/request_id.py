"""The id of the request being served, for logs and for the calls it makes to other services.

The gateway's middleware sets it for each request; the service clients forward it in
`X-Request-Id`, so one id follows a request through every process it reaches.
"""

from __future__ import annotations

import contextvars

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def current_request_id() -> str | None:
    """The id of the request this task serves; None outside any request (a bill-run worker)."""
    value = request_id_var.get()
    return None if value == "-" else value
