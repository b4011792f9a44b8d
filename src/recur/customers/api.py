"""HTTP endpoints of the Customer Information Service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from recur.customers import credits, service
from recur.customers.schemas import (
    BalanceTransaction,
    BillingHistoryEntry,
    CreditCreate,
    Customer,
    CustomerCreate,
    CustomerUpdate,
)
from recur.kit.http import RuntimeDep, TenantId
from recur.kit.pagination import Limit, Page, StartingAfter

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.post("", response_model=Customer)
async def create_customer(params: CustomerCreate, tenant_id: TenantId, rt: RuntimeDep) -> Customer:
    return await service.create_customer(rt, tenant_id, params)


@router.get("", response_model=Page[Customer])
async def list_customers(
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> Page[Customer]:
    return await service.list_customers(rt, tenant_id, limit, starting_after, email)


@router.get("/{customer_id}", response_model=Customer)
async def get_customer(customer_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Customer:
    return await service.get_customer(rt, tenant_id, customer_id)


@router.patch("/{customer_id}", response_model=Customer)
async def update_customer(
    customer_id: str, params: CustomerUpdate, tenant_id: TenantId, rt: RuntimeDep
) -> Customer:
    return await service.update_customer(rt, tenant_id, customer_id, params)


@router.post("/{customer_id}", response_model=Customer, include_in_schema=False)
async def update_customer_post(
    customer_id: str, params: CustomerUpdate, tenant_id: TenantId, rt: RuntimeDep
) -> Customer:
    """Stripe's clients update with POST; accept that too."""
    return await service.update_customer(rt, tenant_id, customer_id, params)


@router.get("/{customer_id}/billing-history", response_model=Page[BillingHistoryEntry])
async def billing_history(
    customer_id: str,
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> Page[BillingHistoryEntry]:
    return await service.billing_history(rt, tenant_id, customer_id, limit, starting_after)


@router.post("/{customer_id}/credits", response_model=BalanceTransaction)
async def grant_credit(
    customer_id: str, params: CreditCreate, tenant_id: TenantId, rt: RuntimeDep
) -> BalanceTransaction:
    """Credit the customer; the credit is spent on its next orders before anything is charged."""
    return await credits.grant_manual_credit(rt, tenant_id, customer_id, params)


@router.get("/{customer_id}/credits", response_model=Page[BalanceTransaction])
async def list_credits(
    customer_id: str,
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> Page[BalanceTransaction]:
    return await credits.list_balance_transactions(
        rt, tenant_id, customer_id, limit, starting_after
    )
