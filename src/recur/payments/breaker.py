"""A circuit breaker per (tenant, payment gateway), in this process's memory.

After `FAILURES_TO_OPEN` calls in a row that ended in a retriable error or an unknown outcome,
the gateway is skipped for `COOL_DOWN_SECONDS` (the payment goes on with the next gateway of its
route, and the skip is recorded as an attempt); then one call is let through, and its answer
closes the breaker or opens it again. The state machine is the API gateway's own breaker per
upstream instance (`gateway.proxy.Breaker`), reused as it is: the same rules, one per key here.
Kept per process on purpose: each process learns of an outage from its own calls within a few
of them, and a breaker needs no shared store to keep working when that store is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from recur.kit.breaker import Breaker

FAILURES_TO_OPEN = 5
COOL_DOWN_SECONDS = 30.0


class GatewayBreakers:
    """The breakers of every (tenant, gateway) this process has called."""

    def __init__(
        self,
        failures_to_open: int = FAILURES_TO_OPEN,
        cool_down_seconds: float = COOL_DOWN_SECONDS,
        now: Callable[[], float] = time.monotonic,
    ):
        self.failures_to_open = failures_to_open
        self.cool_down_seconds = cool_down_seconds
        self._now = now
        self._breakers: dict[tuple[str, str], Breaker] = {}

    def _of(self, tenant_id: str, gateway: str) -> Breaker:
        key = (tenant_id, gateway)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(self.failures_to_open, self.cool_down_seconds)
        return breaker

    def admits(self, tenant_id: str, gateway: str) -> bool:
        """Whether a charge may be sent now (in half-open, this one is the trial)."""
        return self._of(tenant_id, gateway).admits(self._now())

    def state(self, tenant_id: str, gateway: str) -> str:
        """closed, half_open or open."""
        return self._of(tenant_id, gateway).state(self._now())

    def succeeded(self, tenant_id: str, gateway: str) -> None:
        """The gateway answered (a charge or a decline): it works."""
        self._of(tenant_id, gateway).succeeded()

    def failed(self, tenant_id: str, gateway: str) -> None:
        """A retriable error or an unknown outcome."""
        self._of(tenant_id, gateway).failed(self._now())

    def reset(self) -> None:
        """Forget every breaker (tests, benches)."""
        self._breakers.clear()


BREAKERS = GatewayBreakers()
