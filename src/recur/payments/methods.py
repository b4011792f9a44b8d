"""Payment methods: cards verified and tokenized by the gateway, attached to customers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from recur.kit.errors import Conflict, NotFound, PaymentDeclined
from recur.kit.ids import new_id
from recur.kit.pagination import Page, to_page
from recur.payments import dunning
from recur.payments import repository as repo
from recur.payments.attempts import load_router
from recur.payments.checks import _check_filters, _check_id, _customer, _method_row
from recur.payments.gateways.base import GatewayDecline
from recur.payments.gateways.manual import NAME as MANUAL
from recur.payments.gateways.manual import TOKEN_OF_METHOD
from recur.payments.schemas import PaymentMethod, PaymentMethodCreate
from recur.payments.service import OUTBOX
from recur.payments.tables import payment_method_tokens
from recur.payments.tokens import tokenize_everywhere

if TYPE_CHECKING:
    from recur.runtime import Runtime


async def add_payment_method(
    rt: Runtime, tenant_id: str, customer_id: str, params: PaymentMethodCreate
) -> PaymentMethod:
    """Verify a card through the tenant's gateways and keep their tokens for the customer; or
    keep a manual method (`bank_transfer`, `cash`), collected by the manual gateway.

    The card is tokenized at every card gateway the tenant can route to (see `tokens`), so
    that a payment can fail over. A card the first gateway declines raises PaymentDeclined
    (402) and nothing is stored. The customer's first
    payment method becomes its default; `set_default` makes this one the default.
    """
    await _customer(rt, tenant_id, customer_id)
    if params.card is None:
        # A bank transfer or cash: nothing to verify, the manual gateway collects it.
        router = await load_router(rt, tenant_id)
        if MANUAL not in router.credentials:
            why = router.unusable.get(MANUAL) or "not usable"
            raise Conflict(
                f"the manual gateway is {why} for this account", code="gateway_unavailable"
            )
        gateway, token, card_values = MANUAL, TOKEN_OF_METHOD[params.type], {}
        tokens: dict[str, str] = {}
    else:
        try:
            tokenized = await tokenize_everywhere(rt, tenant_id, params.card)
        except GatewayDecline as exc:
            raise PaymentDeclined(exc.message, code=exc.code, param="card") from None
        card = tokenized.card
        gateway, token, tokens = tokenized.gateway, card.token, tokenized.tokens
        card_values = {
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
        }
    now = rt.clock.now()
    async with rt.uow() as uow:
        payment_method_id = new_id("pm")
        await repo.insert_payment_method(
            uow,
            {
                "id": payment_method_id,
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "gateway": gateway,
                "gateway_token": token,
                **card_values,
                "created": now,
            },
        )
        others = [
            {
                "payment_method_id": payment_method_id,
                "gateway": name,
                "tenant_id": tenant_id,
                "token": token,
                "created": now,
            }
            for name, token in sorted(tokens.items())
            if name != gateway
        ]
        if others:
            await uow.execute(sa.insert(payment_method_tokens), others)
        method = repo.to_payment_method(
            await repo.get_payment_method(uow, tenant_id, payment_method_id)
        )
        await OUTBOX.record(
            uow,
            tenant_id,
            "payment_method.attached",
            method.model_dump(mode="json"),
            rt.clock.now(),
        )
        await uow.commit()
    # After the commit: customers checks the method through our client, in its own transaction.
    if params.set_default:
        customer = await rt.customers.set_default_payment_method(tenant_id, customer_id, method.id)
    else:
        customer = await rt.customers.set_default_payment_method_if_unset(
            tenant_id, customer_id, method.id
        )
    if customer.default_payment_method_id == method.id:
        # A new default card: the customer's failed renewal charges are retried with it now.
        await dunning.retry_with_new_default(rt, tenant_id, customer_id)
    return method


async def get_payment_method(
    rt: Runtime, tenant_id: str, payment_method_id: str, customer_id: str | None = None
) -> PaymentMethod:
    """One attached payment method of the tenant (of `customer_id`, when given)."""
    row = await _method_row(rt, tenant_id, payment_method_id)
    if customer_id is not None and row.customer_id != customer_id:
        raise NotFound(f"no such payment method: {payment_method_id}", param="payment_method_id")
    return repo.to_payment_method(row)


async def list_payment_methods(
    rt: Runtime, tenant_id: str, customer_id: str, limit: int, starting_after: str | None
) -> Page[PaymentMethod]:
    """The customer's attached payment methods, newest first."""
    await _customer(rt, tenant_id, customer_id)
    _check_filters(starting_after=starting_after)
    async with rt.uow() as uow:
        rows, has_more = await repo.payment_methods_page(
            uow, tenant_id, customer_id, limit, starting_after
        )
    return to_page(rows, has_more, repo.to_payment_method)


async def detach_payment_method(
    rt: Runtime, tenant_id: str, customer_id: str, payment_method_id: str
) -> PaymentMethod:
    """Detach a customer's payment method: it can no longer be charged or listed."""
    _check_id(customer_id, "customer_id", "customer")
    _check_id(payment_method_id, "payment_method_id", "payment method")
    async with rt.uow() as uow:
        row = await repo.get_payment_method(uow, tenant_id, payment_method_id)
        if row is None or row.customer_id != customer_id:
            raise NotFound(
                f"no such payment method: {payment_method_id}", param="payment_method_id"
            )
        await repo.detach_payment_method(
            uow, tenant_id, payment_method_id, {"detached_at": rt.clock.now()}
        )
        method = repo.to_payment_method(row)
        await OUTBOX.record(
            uow,
            tenant_id,
            "payment_method.detached",
            method.model_dump(mode="json"),
            rt.clock.now(),
        )
        await uow.commit()
    return method
