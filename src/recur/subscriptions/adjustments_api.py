"""HTTP endpoints of the catalog's price adjustments: coupons and tax rates."""

from __future__ import annotations

from fastapi import APIRouter

from recur.kit.http import RuntimeDep, TenantId
from recur.kit.pagination import Limit, Page, StartingAfter
from recur.subscriptions import coupons, tax_rates
from recur.subscriptions.schemas import Coupon, CouponCreate, TaxRate, TaxRateCreate

coupon_router = APIRouter(prefix="/v1/coupons", tags=["catalog"])
tax_rate_router = APIRouter(prefix="/v1/tax-rates", tags=["catalog"])


@coupon_router.post("", response_model=Coupon)
async def create_coupon(params: CouponCreate, tenant_id: TenantId, rt: RuntimeDep) -> Coupon:
    return await coupons.create_coupon(rt, tenant_id, params)


@coupon_router.get("", response_model=Page[Coupon])
async def list_coupons(
    tenant_id: TenantId, rt: RuntimeDep, limit: Limit = 10, starting_after: StartingAfter = None
) -> Page[Coupon]:
    return await coupons.list_coupons(rt, tenant_id, limit, starting_after)


@coupon_router.get("/{coupon_id}", response_model=Coupon)
async def get_coupon(coupon_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Coupon:
    return await coupons.get_coupon(rt, tenant_id, coupon_id)


@tax_rate_router.post("", response_model=TaxRate)
async def create_tax_rate(params: TaxRateCreate, tenant_id: TenantId, rt: RuntimeDep) -> TaxRate:
    return await tax_rates.create_tax_rate(rt, tenant_id, params)


@tax_rate_router.get("", response_model=Page[TaxRate])
async def list_tax_rates(
    tenant_id: TenantId, rt: RuntimeDep, limit: Limit = 10, starting_after: StartingAfter = None
) -> Page[TaxRate]:
    return await tax_rates.list_tax_rates(rt, tenant_id, limit, starting_after)


@tax_rate_router.get("/{tax_rate_id}", response_model=TaxRate)
async def get_tax_rate(tax_rate_id: str, tenant_id: TenantId, rt: RuntimeDep) -> TaxRate:
    return await tax_rates.get_tax_rate(rt, tenant_id, tax_rate_id)
