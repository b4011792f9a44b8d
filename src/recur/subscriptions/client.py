"""How other services talk to the Subscription Manager Service."""

from __future__ import annotations

from typing import Protocol

from recur.subscriptions.schemas import TestClock


class SubscriptionsClient(Protocol):
    async def get_test_clock(self, tenant_id: str, test_clock_id: str) -> TestClock:
        """The test clock; NotFound when it is not this tenant's."""
        ...
