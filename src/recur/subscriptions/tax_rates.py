"""Tax rates of the catalog. A customer's tax rates apply to all its orders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from recur.kit.errors import NotFound
from recur.kit.ids import new_id
from recur.kit.pagination import Page, to_page
from recur.orders.schemas import OrderTaxRate
from recur.subscriptions import repository as repo
from recur.subscriptions.coupons import decimal_text
from recur.subscriptions.schemas import TaxRate, TaxRateCreate
from recur.subscriptions.tables import tax_rates

if TYPE_CHECKING:
    from recur.runtime import Runtime


async def create_tax_rate(rt: Runtime, tenant_id: str, params: TaxRateCreate) -> TaxRate:
    """A tax rate: a percentage added to prices (exclusive) or included in them (inclusive)."""
    async with rt.uow() as uow:
        tax_rate_id = new_id("txr")
        await repo.insert(
            uow,
            tax_rates,
            {
                **params.model_dump(),
                "percentage": decimal_text(params.percentage),
                "id": tax_rate_id,
                "tenant_id": tenant_id,
                "created": rt.clock.now(),
            },
        )
        tax_rate = repo.to_tax_rate(await repo.get_tax_rate(uow, tenant_id, tax_rate_id))
        await uow.commit()
    return tax_rate


async def get_tax_rate(rt: Runtime, tenant_id: str, tax_rate_id: str) -> TaxRate:
    """One tax rate of the tenant."""
    async with rt.uow() as uow:
        row = await repo.get_tax_rate(uow, tenant_id, tax_rate_id)
    if row is None:
        raise NotFound(f"no such tax rate: {tax_rate_id}", param="tax_rate_id")
    return repo.to_tax_rate(row)


async def list_tax_rates(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None
) -> Page[TaxRate]:
    """The tenant's tax rates, newest first."""
    async with rt.uow() as uow:
        rows, has_more = await repo.page(uow, tax_rates, tenant_id, limit, starting_after)
    return to_page(rows, has_more, repo.to_tax_rate)


async def get_tax_rates(rt: Runtime, tenant_id: str, tax_rate_ids: Sequence[str]) -> list[TaxRate]:
    """The tax rates with these ids, in the same order; NotFound (param `tax_rate_ids`) when
    any of them is not the tenant's."""
    if not tax_rate_ids:
        return []
    async with rt.uow() as uow:
        rows = await repo.tax_rates_by_id(uow, tenant_id, tax_rate_ids)
    for tax_rate_id in tax_rate_ids:
        if tax_rate_id not in rows:
            raise NotFound(f"no such tax rate: {tax_rate_id}", param="tax_rate_ids")
    return [repo.to_tax_rate(rows[tax_rate_id]) for tax_rate_id in tax_rate_ids]


def order_tax_rates(rates: Sequence[TaxRate]) -> list[OrderTaxRate]:
    """What orders need of tax rates to tax an order."""
    return [
        OrderTaxRate(
            tax_rate_id=rate.id,
            display_name=rate.display_name,
            percentage=rate.percentage,
            inclusive=rate.inclusive,
        )
        for rate in rates
    ]
