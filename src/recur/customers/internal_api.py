"""Internal endpoints of the Customer Information Service: its client's calls, over HTTP.

Reached only by other Recur services holding the internal token (see kit/service_client.py);
never part of the public API or its documentation.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import Field

from recur.customers.local import LocalCustomersClient
from recur.customers.schemas import BalanceTransaction, CreditRequest, CreditType, Customer
from recur.kit.http import RuntimeDep
from recur.kit.service_client import ObjectId, TenantScoped

router = APIRouter(prefix="/internal/customers", include_in_schema=False)

Currency = Annotated[str, Field(min_length=1, max_length=8)]


class CustomerRef(TenantScoped):
    customer_id: ObjectId


class CustomerIds(TenantScoped):
    customer_ids: list[ObjectId] = Field(max_length=10_000)


class CustomerNumber(TenantScoped):
    number: int


class CurrencyAdoption(CustomerRef):
    currency: Currency


class DefaultPaymentMethod(CustomerRef):
    payment_method_id: ObjectId


class CreditGrant(CustomerRef):
    amount: int
    currency: Currency
    type: CreditType
    source_id: ObjectId
    description: str | None = Field(default=None, max_length=500)


class CreditApplication(CustomerRef):
    order_id: ObjectId
    currency: Currency
    max_amount: int


class CreditApplications(TenantScoped):
    requests: list[CreditRequest] = Field(max_length=10_000)


class CreditUnapplication(CustomerRef):
    order_id: ObjectId


def _customers(rt: RuntimeDep) -> LocalCustomersClient:
    # This process is the customers service: its calls run here, whatever the settings say.
    return LocalCustomersClient(rt)


@router.post("/get", response_model=Customer)
async def get(body: CustomerRef, rt: RuntimeDep) -> Customer:
    return await _customers(rt).get(body.tenant_id, body.customer_id)


@router.post("/get-many", response_model=dict[str, Customer])
async def get_many(body: CustomerIds, rt: RuntimeDep) -> dict[str, Customer]:
    return await _customers(rt).get_many(body.tenant_id, body.customer_ids)


@router.post("/get-by-number", response_model=Customer)
async def get_by_number(body: CustomerNumber, rt: RuntimeDep) -> Customer:
    return await _customers(rt).get_by_number(body.tenant_id, body.number)


@router.post("/adopt-currency", response_model=Customer)
async def adopt_currency(body: CurrencyAdoption, rt: RuntimeDep) -> Customer:
    return await _customers(rt).adopt_currency(body.tenant_id, body.customer_id, body.currency)


@router.post("/set-default-payment-method-if-unset", response_model=Customer)
async def set_default_payment_method_if_unset(
    body: DefaultPaymentMethod, rt: RuntimeDep
) -> Customer:
    return await _customers(rt).set_default_payment_method_if_unset(
        body.tenant_id, body.customer_id, body.payment_method_id
    )


@router.post("/set-default-payment-method", response_model=Customer)
async def set_default_payment_method(body: DefaultPaymentMethod, rt: RuntimeDep) -> Customer:
    return await _customers(rt).set_default_payment_method(
        body.tenant_id, body.customer_id, body.payment_method_id
    )


@router.post("/grant-credit", response_model=BalanceTransaction)
async def grant_credit(body: CreditGrant, rt: RuntimeDep) -> BalanceTransaction:
    return await _customers(rt).grant_credit(
        body.tenant_id,
        body.customer_id,
        body.amount,
        body.currency,
        type_=body.type,
        source_id=body.source_id,
        description=body.description,
    )


@router.post("/apply-credit", response_model=int)
async def apply_credit(body: CreditApplication, rt: RuntimeDep) -> int:
    return await _customers(rt).apply_credit(
        body.tenant_id, body.customer_id, body.order_id, body.currency, body.max_amount
    )


@router.post("/apply-credits", response_model=dict[str, int])
async def apply_credits(body: CreditApplications, rt: RuntimeDep) -> dict[str, int]:
    return await _customers(rt).apply_credits(body.tenant_id, body.requests)


@router.post("/unapply-credit", response_model=int)
async def unapply_credit(body: CreditUnapplication, rt: RuntimeDep) -> int:
    return await _customers(rt).unapply_credit(body.tenant_id, body.customer_id, body.order_id)
