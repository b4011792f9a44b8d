"""The customers client of the distributed mode: the same calls, over HTTP to the Customer
Information Service's internal endpoints (see `internal_api.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import TypeAdapter

from recur.customers.repository import cache_key, from_cache
from recur.customers.schemas import BalanceTransaction, CreditRequest, CreditType, Customer
from recur.kit.cache import DISABLED, Cache
from recur.kit.service_client import ServiceClient

_CUSTOMER = TypeAdapter(Customer)
_CUSTOMERS = TypeAdapter(dict[str, Customer])
_BALANCE_TRANSACTION = TypeAdapter(BalanceTransaction)
_AMOUNT = TypeAdapter(int)
_AMOUNTS = TypeAdapter(dict[str, int])

# Calls safe to send again when an instance may have got one and died before answering: reads,
# and writes that a second time change nothing and answer the same (credit is granted, applied
# and given back once per source or order; a currency or default payment method set again is
# set to the same value).
IDEMPOTENT_CALLS = frozenset(
    {
        "get",
        "get-many",
        "get-by-number",
        "adopt-currency",
        "set-default-payment-method-if-unset",
        "set-default-payment-method",
        "grant-credit",
        "apply-credit",
        "apply-credits",
        "unapply-credit",
    }
)


class HttpCustomersClient:
    """The customers service over HTTP. Reads look in the customers' cache in Redis first, the
    one the service fills and every committed change clears (`repository.cache_key`): a hit
    is as fresh as the service's own read, without a call; a miss asks the service."""

    def __init__(self, upstream: ServiceClient, cache: Cache = DISABLED):
        self._call = upstream.call
        self._cache = cache

    async def get(self, tenant_id: str, customer_id: str) -> Customer:
        hit = from_cache((await self._cache.get(cache_key(tenant_id, customer_id))).value)
        if hit is not None:
            return hit
        body = {"tenant_id": tenant_id, "customer_id": customer_id}
        return await self._call("get", body, _CUSTOMER)

    async def get_many(self, tenant_id: str, customer_ids: Sequence[str]) -> dict[str, Customer]:
        ids = list(dict.fromkeys(customer_ids))
        if not ids:
            return {}
        entries = await self._cache.get_many([cache_key(tenant_id, i) for i in ids])
        hits = {i: from_cache(entry.value) for i, entry in zip(ids, entries, strict=True)}
        found = {i: customer for i, customer in hits.items() if customer is not None}
        missing = [i for i in ids if i not in found]
        if missing:
            body = {"tenant_id": tenant_id, "customer_ids": missing}
            asked: dict[str, Customer] = await self._call("get-many", body, _CUSTOMERS)
            found.update(asked)
        return found

    async def get_by_number(self, tenant_id: str, number: int) -> Customer:
        body = {"tenant_id": tenant_id, "number": number}
        return await self._call("get-by-number", body, _CUSTOMER)

    async def adopt_currency(self, tenant_id: str, customer_id: str, currency: str) -> Customer:
        body = {"tenant_id": tenant_id, "customer_id": customer_id, "currency": currency}
        return await self._call("adopt-currency", body, _CUSTOMER)

    async def set_default_payment_method_if_unset(
        self, tenant_id: str, customer_id: str, payment_method_id: str
    ) -> Customer:
        body = {
            "tenant_id": tenant_id,
            "customer_id": customer_id,
            "payment_method_id": payment_method_id,
        }
        return await self._call("set-default-payment-method-if-unset", body, _CUSTOMER)

    async def set_default_payment_method(
        self, tenant_id: str, customer_id: str, payment_method_id: str
    ) -> Customer:
        body = {
            "tenant_id": tenant_id,
            "customer_id": customer_id,
            "payment_method_id": payment_method_id,
        }
        return await self._call("set-default-payment-method", body, _CUSTOMER)

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
        body = {
            "tenant_id": tenant_id,
            "customer_id": customer_id,
            "amount": amount,
            "currency": currency,
            "type": type_,
            "source_id": source_id,
            "description": description,
        }
        return await self._call("grant-credit", body, _BALANCE_TRANSACTION)

    async def apply_credit(
        self, tenant_id: str, customer_id: str, order_id: str, currency: str, max_amount: int
    ) -> int:
        body = {
            "tenant_id": tenant_id,
            "customer_id": customer_id,
            "order_id": order_id,
            "currency": currency,
            "max_amount": max_amount,
        }
        return await self._call("apply-credit", body, _AMOUNT)

    async def apply_credits(
        self, tenant_id: str, requests: Sequence[CreditRequest]
    ) -> dict[str, int]:
        if not requests:
            return {}
        body = {"tenant_id": tenant_id, "requests": list(requests)}
        return await self._call("apply-credits", body, _AMOUNTS)

    async def unapply_credit(self, tenant_id: str, customer_id: str, order_id: str) -> int:
        body = {"tenant_id": tenant_id, "customer_id": customer_id, "order_id": order_id}
        return await self._call("unapply-credit", body, _AMOUNT)
