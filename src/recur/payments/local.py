"""The payments client of the embedded mode: the same calls, run in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.payments import methods, service
from recur.payments.schemas import Payment, PaymentMethod

if TYPE_CHECKING:
    from recur.runtime import Runtime


class LocalPaymentsClient:
    def __init__(self, runtime: Runtime):
        self._rt = runtime

    async def charge_order(self, tenant_id: str, order_id: str) -> Payment:
        return await service.charge_order(self._rt, tenant_id, order_id)

    async def get_payment_method(self, tenant_id: str, payment_method_id: str) -> PaymentMethod:
        return await methods.get_payment_method(self._rt, tenant_id, payment_method_id)
