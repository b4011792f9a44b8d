"""How other services talk to the Payment Gateway Service."""

from __future__ import annotations

from typing import Protocol

from recur.payments.schemas import Payment, PaymentMethod


class PaymentsClient(Protocol):
    async def charge_order(self, tenant_id: str, order_id: str) -> Payment:
        """Charge what is due on an order with the customer's default payment method.

        Returns the payment, `succeeded` or `failed` (a decline is a result, not an error).
        Raises InvalidRequest with code `no_payment_method` when the customer has none, and
        Conflict when nothing is due on the order.
        """
        ...

    async def get_payment_method(self, tenant_id: str, payment_method_id: str) -> PaymentMethod:
        """The payment method; NotFound when it is not this tenant's."""
        ...
