"""The catalog: products and the plans that price them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.money import CurrencyError, normalize_currency
from recur.kit.pagination import Page, to_page
from recur.subscriptions import repository as repo
from recur.subscriptions.pricing import PriceTier, PricingError, check_pricing
from recur.subscriptions.schemas import Plan, PlanCreate, Product, ProductCreate
from recur.subscriptions.tables import plans, products

if TYPE_CHECKING:
    from recur.runtime import Runtime


async def create_product(rt: Runtime, tenant_id: str, params: ProductCreate) -> Product:
    """A product: what the tenant sells, priced by one or more plans."""
    async with rt.uow() as uow:
        product_id = new_id("prod")
        await repo.insert(
            uow,
            products,
            {
                "id": product_id,
                "tenant_id": tenant_id,
                "name": params.name,
                "description": params.description,
                "active": True,
                "metadata": params.metadata,
                "created": rt.clock.now(),
            },
        )
        product = repo.to_product(await repo.get_product(uow, tenant_id, product_id))
        await uow.commit()
    return product


async def get_product(rt: Runtime, tenant_id: str, product_id: str) -> Product:
    """One product of the tenant."""
    async with rt.uow() as uow:
        row = await repo.get_product(uow, tenant_id, product_id)
    if row is None:
        raise NotFound(f"no such product: {product_id}", param="product_id")
    return repo.to_product(row)


async def list_products(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None
) -> Page[Product]:
    """The tenant's products, newest first."""
    async with rt.uow() as uow:
        rows, has_more = await repo.page(uow, products, tenant_id, limit, starting_after)
    return to_page(rows, has_more, repo.to_product)


async def create_plan(rt: Runtime, tenant_id: str, params: PlanCreate) -> Plan:
    """A plan: a price in one currency, billed every `interval_count` `interval`s.

    Its `pricing_model` says how the price follows the quantity: `flat` and `per_unit` use
    `amount`, the tiered models `tiers`, `package` `amount` per `package_size` units.
    """
    try:
        currency = normalize_currency(params.currency)
    except CurrencyError as exc:
        raise InvalidRequest(f"unknown currency {params.currency!r}", param="currency") from exc
    tiers = None
    if params.tiers is not None:
        tiers = [PriceTier(t.up_to, t.unit_amount, t.flat_amount) for t in params.tiers]
    try:
        check_pricing(params.pricing_model, params.amount, tiers, params.package_size)
    except PricingError as exc:
        raise InvalidRequest(exc.message, param=exc.param) from exc
    async with rt.uow() as uow:
        if await repo.get_product(uow, tenant_id, params.product_id) is None:
            raise NotFound(f"no such product: {params.product_id}", param="product_id")
        plan_id = new_id("plan")
        await repo.insert(
            uow,
            plans,
            {
                **params.model_dump(),
                "id": plan_id,
                "tenant_id": tenant_id,
                "currency": currency,
                "active": True,
                "created": rt.clock.now(),
            },
        )
        plan = repo.to_plan(await repo.get_plan(uow, tenant_id, plan_id))
        await uow.commit()
    return plan


async def get_plan(rt: Runtime, tenant_id: str, plan_id: str) -> Plan:
    """One plan of the tenant. Read through the cache: a plan is never changed once created;
    whatever comes to change one deletes `plan_cache_key` after its commit."""
    key = plan_cache_key(tenant_id, plan_id)
    cached = await rt.cache.get(key)
    if cached.value is not None:
        return Plan.model_validate(cached.value)
    async with rt.uow() as uow:
        row = await repo.get_plan(uow, tenant_id, plan_id)
    if row is None:
        raise NotFound(f"no such plan: {plan_id}", param="plan_id")
    plan = repo.to_plan(row)
    await rt.cache.set(key, plan.model_dump(mode="json"), cached.version)
    return plan


def plan_cache_key(tenant_id: str, plan_id: str) -> str:
    """The cache key of a plan as `Plan` JSON."""
    return f"plan:{tenant_id}:{plan_id}"


async def list_plans(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None, product_id: str | None
) -> Page[Plan]:
    """The tenant's plans, newest first."""
    async with rt.uow() as uow:
        rows, has_more = await repo.page(
            uow, plans, tenant_id, limit, starting_after, product_id=product_id
        )
    return to_page(rows, has_more, repo.to_plan)
