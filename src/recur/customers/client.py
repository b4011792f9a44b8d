"""How other services talk to the Customer Information Service."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from recur.customers.schemas import BalanceTransaction, CreditRequest, CreditType, Customer


class CustomersClient(Protocol):
    async def get(self, tenant_id: str, customer_id: str) -> Customer:
        """The customer; NotFound when it is not this tenant's."""
        ...

    async def get_many(self, tenant_id: str, customer_ids: Sequence[str]) -> dict[str, Customer]:
        """The tenant's customers of these ids, by id; ids of no customer of its are left out."""
        ...

    async def get_by_number(self, tenant_id: str, number: int) -> Customer:
        """The customer with this per-tenant number; NotFound otherwise."""
        ...

    async def adopt_currency(self, tenant_id: str, customer_id: str, currency: str) -> Customer:
        """Set the customer's currency if it has none. InvalidRequest if it has another."""
        ...

    async def set_default_payment_method_if_unset(
        self, tenant_id: str, customer_id: str, payment_method_id: str
    ) -> Customer:
        """Make a customer's first payment method its default."""
        ...

    async def set_default_payment_method(
        self, tenant_id: str, customer_id: str, payment_method_id: str
    ) -> Customer:
        """Make the payment method (one of the customer's) its default."""
        ...

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
        """Add credit to the customer's balance, once per (type, source_id)."""
        ...

    async def apply_credit(
        self, tenant_id: str, customer_id: str, order_id: str, currency: str, max_amount: int
    ) -> int:
        """Spend up to `max_amount` of the customer's credit on an order, once per order."""
        ...

    async def apply_credits(
        self, tenant_id: str, requests: Sequence[CreditRequest]
    ) -> dict[str, int]:
        """`apply_credit` for many orders at once; what each order got, by order id (orders
        that got nothing may be left out)."""
        ...

    async def unapply_credit(self, tenant_id: str, customer_id: str, order_id: str) -> int:
        """Give back the credit spent on an order (0 if none), once per order."""
        ...
