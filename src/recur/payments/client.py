"""How other services talk to the Payment Gateway Service."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from recur.payments.schemas import DunningRunResult, OrderCharge, Payment, PaymentMethod


class PaymentsClient(Protocol):
    async def charge_order(self, tenant_id: str, order_id: str) -> Payment:
        """Charge what is due on an order with the customer's default payment method.

        Returns the payment, `succeeded` or `failed` (a decline is a result, not an error).
        Raises InvalidRequest with code `no_payment_method` when the customer has none, and
        Conflict when nothing is due on the order.
        """
        ...

    async def charge_orders(self, tenant_id: str, order_ids: Sequence[str]) -> list[OrderCharge]:
        """Charge many orders at once (the bill run's batches), each with its customer's default
        payment method; one answer per order, in the order given (see OrderCharge)."""
        ...

    async def get_payment_method(self, tenant_id: str, payment_method_id: str) -> PaymentMethod:
        """The payment method; NotFound when it is not this tenant's."""
        ...

    async def next_retry_due(
        self, tenant_id: str, test_clock_id: str | None, until: datetime
    ) -> datetime | None:
        """When the earliest dunning retry due by `until` on the clock falls (None if none)."""
        ...

    async def run_due_retries(
        self, tenant_id: str | None, now: datetime, test_clock_id: str | None
    ) -> DunningRunResult:
        """Retry the failed renewal charges due by `now` on the clock (the real one when
        `test_clock_id` is None), of one tenant or of all. Safe to run twice."""
        ...
