"""Internal endpoints of the Order Processing Service: its client's calls, over HTTP.

Reached only by other Recur services holding the internal token (see kit/service_client.py);
never part of the public API or its documentation.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from recur.kit.http import RuntimeDep
from recur.kit.service_client import ObjectId, TenantScoped
from recur.orders.local import LocalOrdersClient
from recur.orders.schemas import Order, SubscriptionOrderDraft

router = APIRouter(prefix="/internal/orders", include_in_schema=False)


class OrderRef(TenantScoped):
    order_id: ObjectId


class OrderIds(TenantScoped):
    order_ids: list[ObjectId] = Field(max_length=10_000)


class SubscriptionOrderDrafts(TenantScoped):
    drafts: list[SubscriptionOrderDraft] = Field(max_length=10_000)


def _orders(rt: RuntimeDep) -> LocalOrdersClient:
    # This process is the orders service: its calls run here, whatever the settings say.
    return LocalOrdersClient(rt)


@router.post("/get", response_model=Order)
async def get(body: OrderRef, rt: RuntimeDep) -> Order:
    return await _orders(rt).get(body.tenant_id, body.order_id)


@router.post("/get-many", response_model=dict[str, Order])
async def get_many(body: OrderIds, rt: RuntimeDep) -> dict[str, Order]:
    return await _orders(rt).get_many(body.tenant_id, body.order_ids)


@router.post("/create-subscription-orders", response_model=list[Order])
async def create_subscription_orders(body: SubscriptionOrderDrafts, rt: RuntimeDep) -> list[Order]:
    return await _orders(rt).create_subscription_orders(body.tenant_id, body.drafts)
