"""The customers client of the embedded mode: the same calls, run in this process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from recur.customers import credits, service
from recur.customers.schemas import (
    BalanceTransaction,
    CreditRequest,
    CreditType,
    Customer,
    CustomerUpdate,
)

if TYPE_CHECKING:
    from recur.runtime import Runtime


class LocalCustomersClient:
    def __init__(self, runtime: Runtime):
        self._rt = runtime

    async def get(self, tenant_id: str, customer_id: str) -> Customer:
        return await service.get_customer(self._rt, tenant_id, customer_id)

    async def get_many(self, tenant_id: str, customer_ids: Sequence[str]) -> dict[str, Customer]:
        return await service.get_customers(self._rt, tenant_id, customer_ids)

    async def get_by_number(self, tenant_id: str, number: int) -> Customer:
        return await service.get_customer_by_number(self._rt, tenant_id, number)

    async def adopt_currency(self, tenant_id: str, customer_id: str, currency: str) -> Customer:
        return await service.adopt_currency(self._rt, tenant_id, customer_id, currency)

    async def set_default_payment_method_if_unset(
        self, tenant_id: str, customer_id: str, payment_method_id: str
    ) -> Customer:
        return await service.set_default_payment_method_if_unset(
            self._rt, tenant_id, customer_id, payment_method_id
        )

    async def set_default_payment_method(
        self, tenant_id: str, customer_id: str, payment_method_id: str
    ) -> Customer:
        params = CustomerUpdate(default_payment_method_id=payment_method_id)
        return await service.update_customer(self._rt, tenant_id, customer_id, params)

    async def grant_credit(
        self,
        tenant_id: str,
        customer_id: str,
        amount: int,
        currency: str,
        *,
        type_: CreditType,
        source_id: str,
        description: str | None = None,
    ) -> BalanceTransaction:
        return await credits.grant_credit(
            self._rt,
            tenant_id,
            customer_id,
            amount,
            currency,
            type_=type_,
            source_id=source_id,
            description=description,
        )

    async def apply_credit(
        self, tenant_id: str, customer_id: str, order_id: str, currency: str, max_amount: int
    ) -> int:
        return await credits.apply_credit(
            self._rt, tenant_id, customer_id, order_id, currency, max_amount
        )

    async def unapply_credit(self, tenant_id: str, customer_id: str, order_id: str) -> int:
        return await credits.unapply_credit(self._rt, tenant_id, customer_id, order_id)

    async def apply_credits(
        self, tenant_id: str, requests: Sequence[CreditRequest]
    ) -> dict[str, int]:
        return await credits.apply_credits(self._rt, tenant_id, requests)
