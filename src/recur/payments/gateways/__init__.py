"""Gateway adapters, and which one serves a payment.

Today every payment method and payment goes through the built-in sandbox; routing and failover
across configured gateways (Stripe, Adyen, manual) will live in `gateway_for`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.kit.errors import Conflict
from recur.payments.gateways.base import PaymentGateway
from recur.payments.gateways.sandbox import NAME as SANDBOX
from recur.payments.gateways.sandbox import SandboxGateway

if TYPE_CHECKING:
    from recur.runtime import Runtime

DEFAULT_GATEWAY = SANDBOX


def gateway_for(rt: Runtime, name: str = DEFAULT_GATEWAY) -> PaymentGateway:
    """The adapter of the gateway called `name` (the one a payment method or payment used)."""
    if name == SANDBOX:
        return SandboxGateway(rt.clock)
    raise Conflict(f"the payment gateway {name!r} is not configured", code="gateway_unavailable")
