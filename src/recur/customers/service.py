"""Customer Information Service: customer profiles, numbers, currency and billing history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from recur.customers import repository as repo
from recur.customers.schemas import BillingHistoryEntry, Customer, CustomerCreate, CustomerUpdate
from recur.customers.tables import outbox
from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.events import Outbox
from recur.kit.ids import new_id
from recur.kit.money import CurrencyError, normalize_currency
from recur.kit.pagination import Page, to_page

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime

OUTBOX = Outbox("customers", outbox)


def _currency(code: str, param: str = "currency") -> str:
    try:
        return normalize_currency(code)
    except CurrencyError as exc:
        raise InvalidRequest(f"unknown currency {code!r}", param=param) from exc


async def _known_tax_rates(rt: Runtime, tenant_id: str, tax_rate_ids: list[str]) -> list[str]:
    """The ids, each once, after the Subscription Manager has found every one of them."""
    tax_rate_ids = list(dict.fromkeys(tax_rate_ids))
    try:
        await rt.subscriptions.get_tax_rates(tenant_id, tax_rate_ids)
    except NotFound as exc:
        raise NotFound(exc.message, param="tax_rate_ids") from exc
    return tax_rate_ids


async def _load(uow: UnitOfWork, tenant_id: str, customer_id: str) -> Customer:
    row = await repo.get(uow, tenant_id, customer_id)
    if row is None:
        raise NotFound(f"no such customer: {customer_id}", param="customer_id")
    return repo.to_customer(row)


async def create_customer(rt: Runtime, tenant_id: str, params: CustomerCreate) -> Customer:
    """Create a customer with the tenant's next customer number."""
    currency = _currency(params.currency) if params.currency else None
    if params.test_clock_id is not None:
        try:
            await rt.subscriptions.get_test_clock(tenant_id, params.test_clock_id)
        except NotFound as exc:
            raise NotFound(
                f"no such test clock: {params.test_clock_id}", param="test_clock_id"
            ) from exc
    tax_rate_ids = await _known_tax_rates(rt, tenant_id, params.tax_rate_ids)
    now = rt.clock.now()
    async with rt.uow() as uow:
        customer_id = new_id("cus")
        await repo.insert(
            uow,
            {
                "id": customer_id,
                "tenant_id": tenant_id,
                "number": await repo.next_customer_number(uow, tenant_id),
                "email": params.email,
                "name": params.name,
                "phone": params.phone,
                "description": params.description,
                "address": params.address.model_dump() if params.address else None,
                "currency": currency,
                "metadata": params.metadata,
                "test_clock_id": params.test_clock_id,
                "tax_rate_ids": tax_rate_ids,
                "created": now,
                "updated": now,
            },
        )
        customer = await _load(uow, tenant_id, customer_id)
        await OUTBOX.record(
            uow, tenant_id, "customer.created", customer.model_dump(mode="json"), now
        )
        await uow.commit()
    return customer


async def get_customer(rt: Runtime, tenant_id: str, customer_id: str) -> Customer:
    """One customer of the tenant; NotFound for any other id. Read through the cache."""
    key = repo.cache_key(tenant_id, customer_id)
    cached = await rt.cache.get(key)
    hit = repo.from_cache(cached.value)
    if hit is not None:
        return hit
    async with rt.uow() as uow:
        customer = await _load(uow, tenant_id, customer_id)
    await rt.cache.set(key, customer.model_dump(mode="json"), cached.version)
    return customer


async def get_customers(
    rt: Runtime, tenant_id: str, customer_ids: Sequence[str]
) -> dict[str, Customer]:
    """The tenant's customers of these ids that exist, by id. Read through the cache."""
    ids = list(dict.fromkeys(customer_ids))
    if not ids:
        return {}
    keys = [repo.cache_key(tenant_id, i) for i in ids]
    entries = dict(zip(ids, await rt.cache.get_many(keys), strict=True))
    hits = {i: repo.from_cache(entry.value) for i, entry in entries.items()}
    found = {i: customer for i, customer in hits.items() if customer is not None}
    missing = [i for i in ids if i not in found]
    if missing:
        async with rt.uow() as uow:
            rows = await repo.get_many(uow, tenant_id, missing)
        loaded = {row.id: repo.to_customer(row) for row in rows}
        found.update(loaded)
        await rt.cache.set_many(
            [
                (repo.cache_key(tenant_id, i), c.model_dump(mode="json"), entries[i].version)
                for i, c in loaded.items()
            ]
        )
    return found


async def get_customer_by_number(rt: Runtime, tenant_id: str, number: int) -> Customer:
    """The customer with this per-tenant number."""
    async with rt.uow() as uow:
        row = await repo.get_by_number(uow, tenant_id, number)
    if row is None:
        raise NotFound(f"no customer with number {number}", param="customer_id")
    return repo.to_customer(row)


async def list_customers(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None, email: str | None
) -> Page[Customer]:
    """The tenant's customers, newest first."""
    async with rt.uow() as uow:
        rows, has_more = await repo.page(uow, tenant_id, limit, starting_after, email)
    return to_page(rows, has_more, repo.to_customer)


async def update_customer(
    rt: Runtime, tenant_id: str, customer_id: str, params: CustomerUpdate
) -> Customer:
    """Change the given fields; `default_payment_method_id` must be one of the customer's,
    `tax_rate_ids` the tenant's tax rates."""
    changes = params.model_dump(exclude_unset=True)
    if "default_payment_method_id" in changes:
        pm_id = changes["default_payment_method_id"]
        if pm_id is None:
            raise InvalidRequest(
                "default_payment_method_id cannot be unset", param="default_payment_method_id"
            )
        try:
            method = await rt.payments.get_payment_method(tenant_id, pm_id)
        except NotFound as exc:
            raise NotFound(
                f"no such payment method: {pm_id}", param="default_payment_method_id"
            ) from exc
        if method.customer_id != customer_id:
            raise InvalidRequest(
                "the payment method belongs to another customer",
                param="default_payment_method_id",
            )
    if "metadata" in changes and changes["metadata"] is None:
        changes["metadata"] = {}
    if "tax_rate_ids" in changes:
        changes["tax_rate_ids"] = await _known_tax_rates(
            rt, tenant_id, changes["tax_rate_ids"] or []
        )
    now = rt.clock.now()
    async with rt.uow() as uow:
        await _load(uow, tenant_id, customer_id)
        if changes:
            await repo.update(uow, tenant_id, customer_id, {**changes, "updated": now})
        customer = await _load(uow, tenant_id, customer_id)
        if changes:
            await OUTBOX.record(
                uow, tenant_id, "customer.updated", customer.model_dump(mode="json"), now
            )
        await uow.commit()
    return customer


async def adopt_currency(rt: Runtime, tenant_id: str, customer_id: str, currency: str) -> Customer:
    """Give the customer `currency` if it has none yet; refuse any other currency."""
    currency = _currency(currency)
    async with rt.uow() as uow:
        customer = await _load(uow, tenant_id, customer_id)
        if customer.currency is None:
            await repo.update(
                uow, tenant_id, customer_id, {"currency": currency, "updated": rt.clock.now()}
            )
            customer = customer.model_copy(update={"currency": currency})
            await uow.commit()
        elif customer.currency != currency:
            raise InvalidRequest(
                f"the customer is billed in {customer.currency}, not {currency}",
                param="currency",
                code="currency_mismatch",
            )
    return customer


async def set_default_payment_method_if_unset(
    rt: Runtime, tenant_id: str, customer_id: str, payment_method_id: str
) -> Customer:
    """A customer's first payment method becomes its default."""
    async with rt.uow() as uow:
        customer = await _load(uow, tenant_id, customer_id)
        if customer.default_payment_method_id is None:
            await repo.update(
                uow,
                tenant_id,
                customer_id,
                {"default_payment_method_id": payment_method_id, "updated": rt.clock.now()},
            )
            customer = customer.model_copy(update={"default_payment_method_id": payment_method_id})
            await uow.commit()
    return customer


async def billing_history(
    rt: Runtime, tenant_id: str, customer_id: str, limit: int, starting_after: str | None
) -> Page[BillingHistoryEntry]:
    """The customer's orders, payments and refunds, newest first."""
    async with rt.uow() as uow:
        await _load(uow, tenant_id, customer_id)
        rows, has_more = await repo.history_page(uow, tenant_id, customer_id, limit, starting_after)
    return to_page(rows, has_more, repo.to_history_entry)
