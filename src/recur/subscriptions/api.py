"""HTTP endpoints of the Subscription Manager: catalog, subscriptions, test clocks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query

from recur.kit.http import RuntimeDep, TenantId
from recur.kit.pagination import Limit, Page, StartingAfter
from recur.subscriptions import catalog, changes, lifecycle, service, test_clocks
from recur.subscriptions.schemas import (
    ChangeEffective,
    ChangePreview,
    Plan,
    PlanCreate,
    Product,
    ProductCreate,
    ProrationBehavior,
    Subscription,
    SubscriptionCancel,
    SubscriptionChange,
    SubscriptionCreate,
    SubscriptionStatus,
    TestClock,
    TestClockAdvance,
    TestClockCreate,
)

catalog_router = APIRouter(prefix="/v1", tags=["catalog"])
router = APIRouter(prefix="/v1/subscriptions", tags=["subscriptions"])
test_clock_router = APIRouter(prefix="/v1/test-clocks", tags=["test clocks"])

IdFilter = Annotated[str | None, Query(max_length=64)]


@catalog_router.post("/products", response_model=Product)
async def create_product(params: ProductCreate, tenant_id: TenantId, rt: RuntimeDep) -> Product:
    return await catalog.create_product(rt, tenant_id, params)


@catalog_router.get("/products", response_model=Page[Product])
async def list_products(
    tenant_id: TenantId, rt: RuntimeDep, limit: Limit = 10, starting_after: StartingAfter = None
) -> Page[Product]:
    return await catalog.list_products(rt, tenant_id, limit, starting_after)


@catalog_router.get("/products/{product_id}", response_model=Product)
async def get_product(product_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Product:
    return await catalog.get_product(rt, tenant_id, product_id)


@catalog_router.post("/plans", response_model=Plan)
async def create_plan(params: PlanCreate, tenant_id: TenantId, rt: RuntimeDep) -> Plan:
    return await catalog.create_plan(rt, tenant_id, params)


@catalog_router.get("/plans", response_model=Page[Plan])
async def list_plans(
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    product_id: IdFilter = None,
) -> Page[Plan]:
    return await catalog.list_plans(rt, tenant_id, limit, starting_after, product_id)


@catalog_router.get("/plans/{plan_id}", response_model=Plan)
async def get_plan(plan_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Plan:
    return await catalog.get_plan(rt, tenant_id, plan_id)


@router.post("", response_model=Subscription)
async def create_subscription(
    params: SubscriptionCreate,
    tenant_id: TenantId,
    rt: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Subscription:
    return await service.create_subscription(rt, tenant_id, params, request_key=idempotency_key)


@router.get("", response_model=Page[Subscription])
async def list_subscriptions(
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    customer_id: IdFilter = None,
    status: SubscriptionStatus | None = None,
) -> Page[Subscription]:
    return await service.list_subscriptions(
        rt, tenant_id, limit, starting_after, customer_id, status
    )


@router.get("/{subscription_id}", response_model=Subscription)
async def get_subscription(
    subscription_id: str, tenant_id: TenantId, rt: RuntimeDep
) -> Subscription:
    return await service.get_subscription(rt, tenant_id, subscription_id)


@router.post("/{subscription_id}/cancel", response_model=Subscription)
async def cancel_subscription(
    subscription_id: str,
    tenant_id: TenantId,
    rt: RuntimeDep,
    params: SubscriptionCancel | None = None,
) -> Subscription:
    params = params or SubscriptionCancel()
    return await lifecycle.cancel_subscription(
        rt, tenant_id, subscription_id, params.at_period_end, params.prorate
    )


@router.post("/{subscription_id}/reactivate", response_model=Subscription)
async def reactivate_subscription(
    subscription_id: str, tenant_id: TenantId, rt: RuntimeDep
) -> Subscription:
    """Undo a pending cancel at period end."""
    return await lifecycle.reactivate_subscription(rt, tenant_id, subscription_id)


@router.post("/{subscription_id}/pause", response_model=Subscription)
async def pause_subscription(
    subscription_id: str, tenant_id: TenantId, rt: RuntimeDep
) -> Subscription:
    """No more orders from the end of the paid period, until resumed."""
    return await lifecycle.pause_subscription(rt, tenant_id, subscription_id)


@router.post("/{subscription_id}/resume", response_model=Subscription)
async def resume_subscription(
    subscription_id: str, tenant_id: TenantId, rt: RuntimeDep
) -> Subscription:
    """Start a new period at once, charged at once."""
    return await lifecycle.resume_subscription(rt, tenant_id, subscription_id)


@router.post("/{subscription_id}/change", response_model=Subscription)
async def change_subscription(
    subscription_id: str, params: SubscriptionChange, tenant_id: TenantId, rt: RuntimeDep
) -> Subscription:
    """Change the plan and/or quantity now, prorated as `proration_behavior` says, or at the
    end of the current period (`effective: period_end`)."""
    return await changes.change_subscription(rt, tenant_id, subscription_id, params)


@router.get("/{subscription_id}/preview-change", response_model=ChangePreview)
async def preview_change(
    subscription_id: str,
    tenant_id: TenantId,
    rt: RuntimeDep,
    plan_id: IdFilter = None,
    quantity: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    proration_behavior: ProrationBehavior = "create_prorations",
    effective: ChangeEffective = "immediately",
) -> ChangePreview:
    """The lines the same change would make now, without making it."""
    params = SubscriptionChange(
        plan_id=plan_id,
        quantity=quantity,
        proration_behavior=proration_behavior,
        effective=effective,
    )
    return await changes.preview_change(rt, tenant_id, subscription_id, params)


@router.delete("/{subscription_id}/pending-change", response_model=Subscription)
async def cancel_pending_change(
    subscription_id: str, tenant_id: TenantId, rt: RuntimeDep
) -> Subscription:
    """Drop the change scheduled for the end of the current period."""
    return await changes.cancel_pending_change(rt, tenant_id, subscription_id)


@test_clock_router.post("", response_model=TestClock)
async def create_test_clock(
    params: TestClockCreate, tenant_id: TenantId, rt: RuntimeDep
) -> TestClock:
    return await test_clocks.create_test_clock(rt, tenant_id, params.frozen_time, params.name)


@test_clock_router.get("", response_model=Page[TestClock])
async def list_test_clocks(
    tenant_id: TenantId, rt: RuntimeDep, limit: Limit = 10, starting_after: StartingAfter = None
) -> Page[TestClock]:
    return await test_clocks.list_test_clocks(rt, tenant_id, limit, starting_after)


@test_clock_router.get("/{test_clock_id}", response_model=TestClock)
async def get_test_clock(test_clock_id: str, tenant_id: TenantId, rt: RuntimeDep) -> TestClock:
    return await test_clocks.get_test_clock(rt, tenant_id, test_clock_id)


@test_clock_router.post("/{test_clock_id}/advance", response_model=TestClock)
async def advance_test_clock(
    test_clock_id: str, params: TestClockAdvance, tenant_id: TenantId, rt: RuntimeDep
) -> TestClock:
    return await test_clocks.advance_test_clock(rt, tenant_id, test_clock_id, params.frozen_time)
