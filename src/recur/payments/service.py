"""Payment Gateway Service: payments and charging, through gateway adapters.

A card number goes from the request straight to the gateway's `tokenize` and is forgotten: only
the gateway's token, the brand, the last four digits and the expiry are kept, and no message or
log line ever carries the number or the CVC.

A charge is three steps, so that a crash always leaves evidence and an order is never charged
twice: the payment is written `pending` and committed (the partial unique index on
(tenant_id, order_id) refuses a second pending or succeeded payment of the same order); the
gateway is called outside any transaction, with the payment id as idempotency key; the outcome
is written, with its event, in a new transaction.

Payment methods are in `methods`, refunds in `refunds`, the original design's endpoints in `seed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.money import MAX_MINOR
from recur.kit.pagination import Page, to_page
from recur.payments import batch
from recur.payments import repository as repo
from recur.payments.checks import (
    _check_filters,
    _check_id,
    _check_text,
    _currency,
    _customer,
    _method_row,
    _order,
)
from recur.payments.gateways import DEFAULT_GATEWAY, gateway_for
from recur.payments.gateways.base import GatewayDecline
from recur.payments.schemas import Payment, PaymentCreate
from recur.payments.tables import OUTBOX

if TYPE_CHECKING:
    from recur.customers.schemas import Customer
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments")


@dataclass(frozen=True)
class _Target:
    """Who is charged, how much, and for which order."""

    customer: Customer
    order_id: str | None
    amount: int
    currency: str
    subscription_id: str | None = None


@dataclass(frozen=True)
class _Source:
    """What is charged: a token of the gateway, or a one-off card the gateway refused."""

    gateway: str
    payment_method_id: str | None
    token: str | None
    decline: GatewayDecline | None = None


async def _order_target(rt: Runtime, tenant_id: str, params: PaymentCreate) -> _Target:
    assert params.order_id is not None
    order = await _order(rt, tenant_id, params.order_id)
    if params.customer_id is not None and params.customer_id != order.customer_id:
        raise InvalidRequest("the order belongs to another customer", param="customer_id")
    # An uncollectible order can still be paid, as Stripe allows: it recovers the bad debt.
    if order.status not in ("open", "uncollectible") or order.amount_due <= 0:
        raise Conflict(
            f"order {order.id} is {order.status} with {order.amount_due} due: nothing to charge",
            param="order_id",
            code="order_not_payable",
        )
    if params.amount is not None and params.amount != order.amount_due:
        raise InvalidRequest(
            f"the order has {order.amount_due} due, not {params.amount}",
            param="amount",
            code="amount_mismatch",
        )
    if params.currency is not None and _currency(params.currency) != order.currency:
        raise InvalidRequest(
            f"the order is in {order.currency}", param="currency", code="currency_mismatch"
        )
    customer = await rt.customers.get(tenant_id, order.customer_id)
    return _Target(customer, order.id, order.amount_due, order.currency, order.subscription_id)


async def _amount_target(rt: Runtime, tenant_id: str, params: PaymentCreate) -> _Target:
    assert params.customer_id is not None
    customer = await _customer(rt, tenant_id, params.customer_id)
    if params.amount is None:
        raise InvalidRequest("amount is required when charging a customer", param="amount")
    if params.amount > MAX_MINOR:
        raise InvalidRequest("amount is too large", param="amount", code="amount_too_large")
    if params.currency is not None:
        currency = _currency(params.currency)
    elif customer.currency is not None:
        currency = customer.currency
    else:
        raise InvalidRequest("currency is required: the customer has none yet", param="currency")
    if customer.currency is not None and customer.currency != currency:
        raise InvalidRequest(
            f"the customer is billed in {customer.currency}, not {currency}",
            param="currency",
            code="currency_mismatch",
        )
    return _Target(customer, None, params.amount, currency)


async def _source(
    rt: Runtime, tenant_id: str, customer: Customer, params: PaymentCreate
) -> _Source:
    if params.card is not None:
        if params.payment_method_id is not None:
            raise InvalidRequest("give payment_method_id or card, not both", param="card")
        gateway = gateway_for(rt, DEFAULT_GATEWAY)
        try:
            card = await gateway.tokenize(params.card)
        except GatewayDecline as exc:
            # Still a payment attempt: it is recorded as failed, with the gateway's code.
            return _Source(gateway.name, None, None, exc)
        return _Source(gateway.name, None, card.token)
    if params.payment_method_id is not None:
        row = await _method_row(rt, tenant_id, params.payment_method_id)
        if row.customer_id != customer.id:
            raise InvalidRequest(
                "the payment method belongs to another customer", param="payment_method_id"
            )
        return _Source(row.gateway, row.id, row.gateway_token)
    if customer.default_payment_method_id is None:
        raise InvalidRequest(
            "the customer has no payment method: attach one, or pass card",
            param="payment_method_id",
            code="no_payment_method",
        )
    try:
        row = await _method_row(rt, tenant_id, customer.default_payment_method_id)
    except NotFound:
        raise InvalidRequest(
            "the customer's default payment method was detached: attach another",
            param="payment_method_id",
            code="no_payment_method",
        ) from None
    return _Source(row.gateway, row.id, row.gateway_token)


async def _charge(
    rt: Runtime, tenant_id: str, target: _Target, source: _Source, description: str | None
) -> Payment:
    now = rt.clock.now()
    payment_id = new_id("pay")
    values = {
        "id": payment_id,
        "tenant_id": tenant_id,
        "customer_id": target.customer.id,
        "order_id": target.order_id,
        "amount": target.amount,
        "currency": target.currency,
        "amount_refunded": 0,
        "payment_method_id": source.payment_method_id,
        "gateway": source.gateway,
        "description": description,
        "created": now,
        "updated": now,
    }
    if source.decline is not None:
        async with rt.uow() as uow:
            await repo.insert_payment(
                uow,
                {
                    **values,
                    "status": "failed",
                    "failure_code": source.decline.code,
                    "failure_message": source.decline.message,
                },
            )
            payment = repo.to_payment(await repo.get_payment(uow, tenant_id, payment_id))
            await OUTBOX.record(
                uow, tenant_id, "payment.failed", payment.model_dump(mode="json"), rt.clock.now()
            )
            await uow.commit()
        log.info("payment %s failed: %s", payment.id, payment.failure_code)
        return payment

    assert source.token is not None
    gateway_for(rt, source.gateway)  # an unknown gateway fails before anything is written
    try:
        async with rt.uow() as uow:
            await repo.insert_payment(uow, {**values, "status": "pending"})
            await uow.commit()
    except IntegrityError:
        if target.order_id is None:
            raise
        raise Conflict(
            f"order {target.order_id} is already paid or being paid",
            param="order_id",
            code="order_already_paid",
        ) from None

    # Outside any transaction: a slow gateway holds no lock. The payment id as idempotency key
    # makes a retry after a crash charge once.
    results = await batch.call_gateways(rt, [(values, source.gateway, source.token)])
    settled = (await batch.settle(rt, tenant_id, results)).get(payment_id)
    # None when settled meanwhile by someone else: theirs is the outcome.
    payment = settled or await get_payment(rt, tenant_id, payment_id)
    log.info("payment %s %s %s", payment.id, payment.status, payment.failure_code or "")
    return payment


async def create_payment(rt: Runtime, tenant_id: str, params: PaymentCreate) -> Payment:
    """Charge an order's amount due (`order_id`) or an amount to a customer (`customer_id`).

    The card is `payment_method_id`, a one-off `card`, or the customer's default. A decline is
    not an error here: the payment comes back `failed` (the API answers it with a 402).
    """
    description = _check_text(params.description, "description")
    if params.order_id is not None:
        target = await _order_target(rt, tenant_id, params)
    elif params.customer_id is not None:
        target = await _amount_target(rt, tenant_id, params)
    else:
        raise InvalidRequest(
            "give order_id, or customer_id with amount and currency", param="order_id"
        )
    source = await _source(rt, tenant_id, target.customer, params)
    if target.customer.currency is None:
        await rt.customers.adopt_currency(tenant_id, target.customer.id, target.currency)
    payment = await _charge(rt, tenant_id, target, source, description)
    if payment.status == "failed" and target.order_id and target.subscription_id:
        await start_dunning(
            rt,
            tenant_id,
            target.order_id,
            target.subscription_id,
            payment.customer_id,
            payment.payment_method_id,
            payment.created,
        )
    return payment


async def start_dunning(
    rt: Runtime,
    tenant_id: str,
    order_id: str,
    subscription_id: str,
    customer_id: str,
    payment_method_id: str | None,
    failed_at: datetime | None = None,
) -> None:
    """A subscription order could not be charged: dunning retries it later (once opened,
    asking again does nothing)."""
    from recur.payments import dunning  # imported here: dunning charges through this module

    await dunning.open_after_failure(
        rt,
        tenant_id,
        order_id=order_id,
        subscription_id=subscription_id,
        customer_id=customer_id,
        payment_method_id=payment_method_id,
        failed_at=failed_at,
    )


async def charge_order(rt: Runtime, tenant_id: str, order_id: str) -> Payment:
    """Charge an order's amount due with the customer's default payment method.

    Returns the payment, succeeded or failed. InvalidRequest `no_payment_method` when the
    customer has none; Conflict when nothing is due or the order is paid or being paid.
    A subscription order that cannot be paid (a decline, or no card) is retried later by
    dunning.
    """
    try:
        return await create_payment(rt, tenant_id, PaymentCreate(order_id=order_id))
    except InvalidRequest as exc:
        if exc.code == "no_payment_method":
            # No card, so no payment record; still a failed charge, which dunning retries
            # (at once when the customer adds a card).
            order = await rt.orders.get(tenant_id, order_id)
            if order.subscription_id is not None:
                await start_dunning(
                    rt, tenant_id, order.id, order.subscription_id, order.customer_id, None
                )
        raise


async def get_payment(rt: Runtime, tenant_id: str, payment_id: str) -> Payment:
    """One payment of the tenant."""
    _check_id(payment_id, "payment_id", "payment")
    async with rt.uow() as uow:
        row = await repo.get_payment(uow, tenant_id, payment_id)
    if row is None:
        raise NotFound(f"no such payment: {payment_id}", param="payment_id")
    return repo.to_payment(row)


async def list_payments(
    rt: Runtime,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    customer_id: str | None = None,
    order_id: str | None = None,
) -> Page[Payment]:
    """The tenant's payments, newest first, of one customer or order when given."""
    _check_filters(starting_after=starting_after, customer_id=customer_id, order_id=order_id)
    async with rt.uow() as uow:
        rows, has_more = await repo.payments_page(
            uow, tenant_id, limit, starting_after, customer_id, order_id
        )
    return to_page(rows, has_more, repo.to_payment)
