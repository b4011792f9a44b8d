"""The payments client of the distributed mode: the same calls, over HTTP to the Payment
Gateway Service's internal endpoints (see `internal_api.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import TypeAdapter

from recur.kit.service_client import ServiceClient
from recur.payments.schemas import DunningRunResult, OrderCharge, Payment, PaymentMethod

_PAYMENT = TypeAdapter(Payment)
_ORDER_CHARGES = TypeAdapter(list[OrderCharge])
_PAYMENT_METHOD = TypeAdapter(PaymentMethod)
_MOMENT = TypeAdapter(datetime | None)
_DUNNING_RUN = TypeAdapter(DunningRunResult)

# Calls safe to send again when an instance may have got one and died before answering: reads,
# and the bill run's batch charge, which charges an order once however often it is asked (asked
# again it answers `paid` or `in_progress`, as after a rerun). `charge-order` is not: asked
# again after it charged, it is a Conflict. Nor is `run-due-retries`, whose counts would be
# those of the second run.
IDEMPOTENT_CALLS = frozenset({"charge-orders", "get-payment-method", "next-retry-due"})


class HttpPaymentsClient:
    def __init__(self, upstream: ServiceClient):
        self._call = upstream.call

    async def charge_order(self, tenant_id: str, order_id: str) -> Payment:
        body = {"tenant_id": tenant_id, "order_id": order_id}
        return await self._call("charge-order", body, _PAYMENT)

    async def charge_orders(self, tenant_id: str, order_ids: Sequence[str]) -> list[OrderCharge]:
        if not order_ids:
            return []
        body = {"tenant_id": tenant_id, "order_ids": list(order_ids)}
        return await self._call("charge-orders", body, _ORDER_CHARGES)

    async def get_payment_method(self, tenant_id: str, payment_method_id: str) -> PaymentMethod:
        body = {"tenant_id": tenant_id, "payment_method_id": payment_method_id}
        return await self._call("get-payment-method", body, _PAYMENT_METHOD)

    async def next_retry_due(
        self, tenant_id: str, test_clock_id: str | None, until: datetime
    ) -> datetime | None:
        body = {"tenant_id": tenant_id, "test_clock_id": test_clock_id, "until": until}
        return await self._call("next-retry-due", body, _MOMENT)

    async def run_due_retries(
        self, tenant_id: str | None, now: datetime, test_clock_id: str | None
    ) -> DunningRunResult:
        body = {"tenant_id": tenant_id, "now": now, "test_clock_id": test_clock_id}
        return await self._call("run-due-retries", body, _DUNNING_RUN)
