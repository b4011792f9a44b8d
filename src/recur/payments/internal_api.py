"""Internal endpoints of the Payment Gateway Service: its client's calls, over HTTP.

Reached only by other Recur services holding the internal token (see kit/service_client.py);
never part of the public API or its documentation.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import AwareDatetime, BaseModel, Field

from recur.kit.http import RuntimeDep
from recur.kit.service_client import ObjectId, TenantScoped
from recur.payments.local import LocalPaymentsClient
from recur.payments.schemas import DunningRunResult, OrderCharge, Payment, PaymentMethod

router = APIRouter(prefix="/internal/payments", include_in_schema=False)


class OrderRef(TenantScoped):
    order_id: ObjectId


class OrderIds(TenantScoped):
    order_ids: list[ObjectId] = Field(max_length=10_000)


class PaymentMethodRef(TenantScoped):
    payment_method_id: ObjectId


class NextRetryQuery(TenantScoped):
    test_clock_id: ObjectId | None = None
    until: AwareDatetime


class DueRetriesRun(BaseModel):
    """Of one tenant, or of all of them (the server's schedule) when `tenant_id` is null."""

    tenant_id: ObjectId | None = None
    now: AwareDatetime
    test_clock_id: ObjectId | None = None


def _payments(rt: RuntimeDep) -> LocalPaymentsClient:
    # This process is the payments service: its calls run here, whatever the settings say.
    return LocalPaymentsClient(rt)


@router.post("/charge-order", response_model=Payment)
async def charge_order(body: OrderRef, rt: RuntimeDep) -> Payment:
    return await _payments(rt).charge_order(body.tenant_id, body.order_id)


@router.post("/charge-orders", response_model=list[OrderCharge])
async def charge_orders(body: OrderIds, rt: RuntimeDep) -> list[OrderCharge]:
    return await _payments(rt).charge_orders(body.tenant_id, body.order_ids)


@router.post("/get-payment-method", response_model=PaymentMethod)
async def get_payment_method(body: PaymentMethodRef, rt: RuntimeDep) -> PaymentMethod:
    return await _payments(rt).get_payment_method(body.tenant_id, body.payment_method_id)


@router.post("/next-retry-due", response_model=datetime | None)
async def next_retry_due(body: NextRetryQuery, rt: RuntimeDep) -> datetime | None:
    return await _payments(rt).next_retry_due(body.tenant_id, body.test_clock_id, body.until)


@router.post("/run-due-retries", response_model=DunningRunResult)
async def run_due_retries(body: DueRetriesRun, rt: RuntimeDep) -> DunningRunResult:
    return await _payments(rt).run_due_retries(body.tenant_id, body.now, body.test_clock_id)
