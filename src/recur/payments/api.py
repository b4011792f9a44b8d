"""HTTP endpoints of the Payment Gateway Service."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from recur.kit.errors import PaymentDeclined
from recur.kit.http import RuntimeDep, TenantId
from recur.kit.money import MAX_MINOR
from recur.kit.pagination import Limit, Page, StartingAfter
from recur.payments import methods, refunds, seed, service
from recur.payments.schemas import (
    Payment,
    PaymentCreate,
    PaymentMethod,
    PaymentMethodCreate,
    PaymentStatusReport,
    Refund,
    RefundCreate,
)

router = APIRouter(tags=["payments"])
seed_router = APIRouter(tags=["original design"])

IdFilter = Annotated[str | None, Query(max_length=64)]
CustomerNumber = Annotated[
    int, Query(ge=1, le=MAX_MINOR, description="The customer's number (not its cus_ id)")
]
DECLINED: dict[int | str, dict[str, Any]] = {
    402: {"description": "Declined: the failed payment, recorded, is in `error.payment`"}
}


def _declined_if_failed(payment: Payment) -> Payment:
    if payment.status == "failed":
        raise PaymentDeclined(
            payment.failure_message or "the payment failed",
            code=payment.failure_code or "card_declined",
            payment=payment.model_dump(mode="json"),
        )
    return payment


@router.post(
    "/v1/customers/{customer_id}/payment-methods",
    response_model=PaymentMethod,
    responses=DECLINED,
)
async def add_payment_method(
    customer_id: str, params: PaymentMethodCreate, tenant_id: TenantId, rt: RuntimeDep
) -> PaymentMethod:
    return await methods.add_payment_method(rt, tenant_id, customer_id, params)


@router.get("/v1/customers/{customer_id}/payment-methods", response_model=Page[PaymentMethod])
async def list_payment_methods(
    customer_id: str,
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
) -> Page[PaymentMethod]:
    return await methods.list_payment_methods(rt, tenant_id, customer_id, limit, starting_after)


@router.get(
    "/v1/customers/{customer_id}/payment-methods/{payment_method_id}",
    response_model=PaymentMethod,
)
async def get_payment_method(
    customer_id: str, payment_method_id: str, tenant_id: TenantId, rt: RuntimeDep
) -> PaymentMethod:
    return await methods.get_payment_method(
        rt, tenant_id, payment_method_id, customer_id=customer_id
    )


@router.delete(
    "/v1/customers/{customer_id}/payment-methods/{payment_method_id}",
    response_model=PaymentMethod,
)
async def detach_payment_method(
    customer_id: str, payment_method_id: str, tenant_id: TenantId, rt: RuntimeDep
) -> PaymentMethod:
    return await methods.detach_payment_method(rt, tenant_id, customer_id, payment_method_id)


@router.post("/v1/payments", response_model=Payment, responses=DECLINED)
async def create_payment(
    params: PaymentCreate,
    tenant_id: TenantId,
    rt: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Payment:
    return _declined_if_failed(
        await service.create_payment(rt, tenant_id, params, request_key=idempotency_key)
    )


@router.get("/v1/payments", response_model=Page[Payment])
async def list_payments(
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    customer_id: IdFilter = None,
    order_id: IdFilter = None,
) -> Page[Payment]:
    return await service.list_payments(
        rt, tenant_id, limit, starting_after, customer_id=customer_id, order_id=order_id
    )


@router.get("/v1/payments/{payment_id}", response_model=Payment)
async def get_payment(payment_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Payment:
    return await service.get_payment(rt, tenant_id, payment_id)


@router.post("/v1/refunds", response_model=Refund)
async def create_refund(params: RefundCreate, tenant_id: TenantId, rt: RuntimeDep) -> Refund:
    return await refunds.create_refund(rt, tenant_id, params)


@router.get("/v1/refunds", response_model=Page[Refund])
async def list_refunds(
    tenant_id: TenantId,
    rt: RuntimeDep,
    limit: Limit = 10,
    starting_after: StartingAfter = None,
    payment_id: IdFilter = None,
) -> Page[Refund]:
    return await refunds.list_refunds(rt, tenant_id, limit, starting_after, payment_id=payment_id)


@router.get("/v1/refunds/{refund_id}", response_model=Refund)
async def get_refund(refund_id: str, tenant_id: TenantId, rt: RuntimeDep) -> Refund:
    return await refunds.get_refund(rt, tenant_id, refund_id)


@seed_router.post("/payment", response_model=Payment, responses=DECLINED)
async def seed_create_payment(
    customer_id: CustomerNumber,
    amount: Annotated[
        str, Query(max_length=40, description="Major units of the customer's currency: 12.34")
    ],
    tenant_id: TenantId,
    rt: RuntimeDep,
) -> Payment:
    """Charge the customer's default payment method in the customer's currency."""
    payment = await seed.pay_by_customer_number(rt, tenant_id, customer_id, amount)
    return _declined_if_failed(payment)


@seed_router.get("/payment-status", response_model=PaymentStatusReport)
async def seed_payment_status(
    customer_id: CustomerNumber, tenant_id: TenantId, rt: RuntimeDep
) -> PaymentStatusReport:
    """The status of the customer's latest payment."""
    return await seed.latest_payment_status(rt, tenant_id, customer_id)
