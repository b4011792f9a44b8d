"""The payments client of the embedded mode: the same calls, run in this process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from recur.payments import batch, dunning, methods, service
from recur.payments.schemas import DunningRunResult, OrderCharge, Payment, PaymentMethod

if TYPE_CHECKING:
    from recur.runtime import Runtime


class LocalPaymentsClient:
    def __init__(self, runtime: Runtime):
        self._rt = runtime

    async def charge_order(self, tenant_id: str, order_id: str) -> Payment:
        return await service.charge_order(self._rt, tenant_id, order_id)

    async def charge_orders(self, tenant_id: str, order_ids: Sequence[str]) -> list[OrderCharge]:
        return await batch.charge_orders(self._rt, tenant_id, order_ids)

    async def get_payment_method(self, tenant_id: str, payment_method_id: str) -> PaymentMethod:
        return await methods.get_payment_method(self._rt, tenant_id, payment_method_id)

    async def next_retry_due(
        self, tenant_id: str, test_clock_id: str | None, until: datetime
    ) -> datetime | None:
        return await dunning.next_retry_due(self._rt, tenant_id, test_clock_id, until)

    async def run_due_retries(
        self, tenant_id: str | None, now: datetime, test_clock_id: str | None
    ) -> DunningRunResult:
        return await dunning.run_due_retries(
            self._rt, now, test_clock_id=test_clock_id, tenant_id=tenant_id
        )
