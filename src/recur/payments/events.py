"""What the Payment Gateway Service learns from other services' events: nothing yet.

Present for symmetry with the other services, so the runtime can subscribe every service alike;
dunning retries will consume order and subscription events here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.kit.events import EventBus

if TYPE_CHECKING:
    from recur.runtime import Runtime


def subscribe(bus: EventBus, rt: Runtime) -> None:
    """Register the payments consumers on `bus` (none so far)."""
