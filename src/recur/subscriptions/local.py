"""The subscriptions client of the embedded mode: the same calls, run in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.subscriptions import test_clocks
from recur.subscriptions.schemas import TestClock

if TYPE_CHECKING:
    from recur.runtime import Runtime


class LocalSubscriptionsClient:
    def __init__(self, runtime: Runtime):
        self._rt = runtime

    async def get_test_clock(self, tenant_id: str, test_clock_id: str) -> TestClock:
        return await test_clocks.get_test_clock(self._rt, tenant_id, test_clock_id)
