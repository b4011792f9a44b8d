"""HTTP endpoints of the Order Processing Service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from recur.kit.http import RuntimeDep, TenantId
from recur.kit.pagination import Limit, Page, StartingAfter
from recur.orders import service
from recur.orders.schemas import Order, OrderCreate, OrderStatus

router = APIRouter(prefix="/v1/orders", tags=["orders"])


@router.post("", response_model=Order)
async def create_order(params: OrderCreate, tenant_id: TenantId, rt: RuntimeDep) -> Order:
    return await service.create_order(rt, tenant_id, params)


@router.get("", response_model=Page[Order])
async def list_orders(
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
    subscription_id: Annotated[str | None, Query(max_length=64)] = None,
    status: OrderStatus | None = None,
) -> Page[Order]:
    return await service.list_orders(
        rt, tenant_id, limit, starting_after, customer_id, subscription_id, status
    )


@router.get("/{order_id}", response_model=Order)
async def get_order(order_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Order:
    return await service.get_order(rt, tenant_id, order_id)


@router.post("/{order_id}/finalize", response_model=Order)
async def finalize_order(order_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Order:
    return await service.finalize_order(rt, tenant_id, order_id)


@router.post("/{order_id}/void", response_model=Order)
async def void_order(order_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Order:
    return await service.void_order(rt, tenant_id, order_id)


@router.post("/{order_id}/mark-uncollectible", response_model=Order)
async def mark_uncollectible(order_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Order:
    return await service.mark_uncollectible(rt, tenant_id, order_id)


@router.get("/{order_id}/invoice", response_class=HTMLResponse)
async def invoice(order_id: str, tenant_id: TenantId, rt: RuntimeDep) -> HTMLResponse:
    return HTMLResponse(await service.render_invoice(rt, tenant_id, order_id))
