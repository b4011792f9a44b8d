"""The original design's endpoints: a customer's number and an amount in major units."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.money import AmountError, to_minor
from recur.payments import repository as repo
from recur.payments.schemas import Payment, PaymentCreate, PaymentStatusReport
from recur.payments.service import create_payment

if TYPE_CHECKING:
    from recur.runtime import Runtime


async def pay_by_customer_number(rt: Runtime, tenant_id: str, number: int, amount: str) -> Payment:
    """Charge `amount` (major units, "12.34") to the default card of customer `number`."""
    customer = await rt.customers.get_by_number(tenant_id, number)
    if customer.currency is None:
        raise InvalidRequest(
            "the customer has no currency yet: charge it once through POST /v1/payments",
            param="customer_id",
            code="currency_missing",
        )
    try:
        minor = to_minor(amount, customer.currency)
    except AmountError as exc:
        raise InvalidRequest(str(exc), param="amount") from None
    if minor <= 0:
        raise InvalidRequest("amount must be positive", param="amount")
    params = PaymentCreate(customer_id=customer.id, amount=minor, currency=customer.currency)
    return await create_payment(rt, tenant_id, params)


async def latest_payment_status(rt: Runtime, tenant_id: str, number: int) -> PaymentStatusReport:
    """The status of the latest payment of customer `number`."""
    customer = await rt.customers.get_by_number(tenant_id, number)
    async with rt.uow() as uow:
        rows, _ = await repo.payments_page(uow, tenant_id, 1, None, customer_id=customer.id)
    if not rows:
        raise NotFound(f"customer {number} has no payment", param="customer_id")
    payment = repo.to_payment(rows[0])
    return PaymentStatusReport(
        customer_id=number,
        payment_id=payment.id,
        status=payment.status,
        amount=payment.amount,
        currency=payment.currency,
        failure_code=payment.failure_code,
        created=payment.created,
    )
