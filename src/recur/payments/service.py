"""Payment Gateway Service: payments and charging, through gateway adapters.

A card number goes from the request straight to the gateway's `tokenize` and is forgotten: only
the gateway's token, the brand, the last four digits and the expiry are kept, and no message or
log line ever carries the number or the CVC.

A charge is three steps, so that a crash always leaves evidence and an order is never charged
twice: the payment is written `pending`, with its route through the tenant's gateways, and
committed (the partial unique index on (tenant_id, order_id) refuses a second pending or
succeeded payment of the same order); its attempts go to the gateways in order, each written
before its call and carrying its own idempotency key, outside any transaction (`attempts`:
failover on retriable errors, never after a decline or an unknown outcome); the outcome is
written, with its event, in a new transaction. A payment whose outcome is unknown stays pending
until the reconciler (`reconcile`) has asked the gateway.

Payment methods are in `methods`, refunds in `refunds`, the original design's endpoints in `seed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.money import MAX_MINOR
from recur.kit.pagination import Page, to_page
from recur.payments import attempts
from recur.payments import repository as repo
from recur.payments.checks import (
    _check_filters,
    _check_id,
    _check_text,
    _currency,
    _customer,
    _order,
)
from recur.payments.credentials import credentials_cipher
from recur.payments.gateways import DEFAULT_GATEWAY
from recur.payments.gateways.base import GatewayDecline
from recur.payments.schemas import Payment, PaymentCreate
from recur.payments.tables import OUTBOX
from recur.payments.tables import payments as payments_table
from recur.payments.tokens import tokenize_everywhere

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
    """What is charged: the card's token at each gateway, or a one-off card that was refused."""

    gateway: str  # the card's own gateway (the first that tokenized it)
    payment_method_id: str | None
    tokens: dict[str, str]
    brand: str | None = None
    decline: GatewayDecline | None = None
    # The tenant's routing, when it was read with the card.
    router: attempts.Router | None = None


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
        try:
            tokenized = await tokenize_everywhere(rt, tenant_id, params.card)
        except GatewayDecline as exc:
            # Still a payment attempt: it is recorded as failed, with the gateway's code.
            return _Source(DEFAULT_GATEWAY, None, {}, None, exc)
        return _Source(
            tokenized.gateway, None, tokenized.tokens, tokenized.card.brand, router=tokenized.router
        )
    if params.payment_method_id is not None:
        _check_id(params.payment_method_id, "payment_method_id", "payment method")
        row, tokens, router = await _stored_card(rt, tenant_id, params.payment_method_id)
        if row is None:
            raise NotFound(
                f"no such payment method: {params.payment_method_id}", param="payment_method_id"
            )
        if row.customer_id != customer.id:
            raise InvalidRequest(
                "the payment method belongs to another customer", param="payment_method_id"
            )
        return _Source(row.gateway, row.id, tokens, row.brand, router=router)
    if customer.default_payment_method_id is None:
        raise InvalidRequest(
            "the customer has no payment method: attach one, or pass card",
            param="payment_method_id",
            code="no_payment_method",
        )
    row, tokens, router = await _stored_card(rt, tenant_id, customer.default_payment_method_id)
    if row is None:
        raise InvalidRequest(
            "the customer's default payment method was detached: attach another",
            param="payment_method_id",
            code="no_payment_method",
        )
    return _Source(row.gateway, row.id, tokens, row.brand, router=router)


async def _stored_card(
    rt: Runtime, tenant_id: str, payment_method_id: str
) -> tuple[Any, dict[str, str], attempts.Router | None]:
    """A stored card (None if there is none by that id), its tokens, and the tenant's routing:
    one transaction for all a charge reads before it is written."""
    async with rt.uow() as uow:
        row = await repo.get_payment_method(uow, tenant_id, payment_method_id)
        if row is None:
            return None, {}, None
        tokens = (await attempts.tokens_of(uow, tenant_id, [row.id]))[row.id]
        router = await attempts.router_in(uow, credentials_cipher(rt.settings), tenant_id)
    return row, tokens, router


async def _by_request_key(rt: Runtime, tenant_id: str, request_key: str) -> Payment | None:
    async with rt.uow() as uow:
        row = await uow.fetch_one(
            sa.select(payments_table.c.id).where(
                payments_table.c.tenant_id == tenant_id,
                payments_table.c.request_key == request_key,
            )
        )
    return None if row is None else await _payment(rt, tenant_id, row.id)


async def _resume(rt: Runtime, tenant_id: str, payment: Payment) -> Payment:
    """The payment a request made before its process died (the request is carried out again
    under the same Idempotency-Key): settled from what its gateway did, never charged anew
    while that is unknown."""
    from recur.payments import reconcile  # reconcile charges through the modules above

    if payment.status == "pending":
        await reconcile.reconcile_payment(rt, tenant_id, payment.id)
        payment = await _payment(rt, tenant_id, payment.id)
    log.info("payment %s resumed under its request key: %s", payment.id, payment.status)
    return payment


async def _charge(
    rt: Runtime,
    tenant_id: str,
    target: _Target,
    source: _Source,
    description: str | None,
    request_key: str | None = None,
) -> Payment:
    now = rt.clock.now()
    payment_id = new_id("pay")
    values = {
        "request_key": request_key,
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

    router = source.router or await attempts.load_router(rt, tenant_id)
    candidate, route = attempts.candidate(
        router, payment_id, target.amount, target.currency, source.brand, source.tokens
    )
    values["gateway"] = route.gateways[0] if route.gateways else source.gateway
    values["routing_reason"] = route.reason
    values["routing_rule_id"] = route.rule_id
    # The payment and its first round of attempts are written together, before any call.
    first = attempts.plan_round(tenant_id, [candidate], now)
    try:
        async with rt.uow() as uow:
            await repo.insert_payment(uow, {**values, "status": "pending"})
            await attempts.insert_attempts(uow, first.rows)
            await uow.commit()
    except IntegrityError:
        if request_key is not None:
            existing = await _by_request_key(rt, tenant_id, request_key)
            if existing is not None:
                return await _resume(rt, tenant_id, existing)
        if target.order_id is None:
            raise
        raise Conflict(
            f"order {target.order_id} is already paid or being paid",
            param="order_id",
            code="order_already_paid",
        ) from None

    # Outside any transaction: a slow gateway holds no lock. Each attempt's idempotency key
    # makes a retry after a crash charge once; an unknown outcome leaves the payment pending.
    settled = (await attempts.run_attempts(rt, tenant_id, [candidate], first=first)).get(payment_id)
    # None when left pending, or settled meanwhile by someone else: theirs is the outcome.
    payment = settled or await _payment(rt, tenant_id, payment_id)
    log.info("payment %s %s %s", payment.id, payment.status, payment.failure_code or "")
    return payment


async def create_payment(
    rt: Runtime, tenant_id: str, params: PaymentCreate, request_key: str | None = None
) -> Payment:
    """Charge an order's amount due (`order_id`) or an amount to a customer (`customer_id`).

    The card is `payment_method_id`, a one-off `card`, or the customer's default. A decline is
    not an error here: the payment comes back `failed` (the API answers it with a 402).
    `request_key` is the request's Idempotency-Key: the request carried out again (its first
    process died) gets the payment it made, settled, not a second charge.
    """
    if request_key is not None:
        existing = await _by_request_key(rt, tenant_id, request_key)
        if existing is not None:
            return await _resume(rt, tenant_id, existing)
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
    payment = await _charge(rt, tenant_id, target, source, description, request_key)
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


async def _payment(rt: Runtime, tenant_id: str, payment_id: str) -> Payment:
    async with rt.uow() as uow:
        return repo.to_payment(await repo.get_payment(uow, tenant_id, payment_id))


async def get_payment(rt: Runtime, tenant_id: str, payment_id: str) -> Payment:
    """One payment of the tenant, with its attempts at the gateways."""
    _check_id(payment_id, "payment_id", "payment")
    async with rt.uow() as uow:
        row = await repo.get_payment(uow, tenant_id, payment_id)
        tried = await attempts.attempts_of(uow, tenant_id, payment_id) if row else []
    if row is None:
        raise NotFound(f"no such payment: {payment_id}", param="payment_id")
    return repo.to_payment(row).model_copy(update={"attempts": tried})


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
