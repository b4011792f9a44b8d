"""A card tokenized at every gateway of the tenant, so that failover can charge it anywhere.

The card number reaches each gateway's `tokenize` once, concurrently, and is forgotten: only
the tokens are kept (`payment_method_tokens`). The gateways are asked in the order a payment
would try them: those the tenant's routing rules name, by rule priority, then the built-in
sandbox (where payments go when no rule matches), then the other configured gateways. The
first gateway that gives a definite answer decides: a decline refuses the card, a token makes
it that gateway's card (the payment method's `gateway`). A gateway that could not answer, or
declined after the first, just keeps no token: payments routed there skip it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from recur.kit.errors import ServiceUnavailable
from recur.payments import attempts, routing
from recur.payments.attempts import Router, load_router
from recur.payments.gateway_config import RoutedGateway
from recur.payments.gateways.base import GatewayDecline, TokenizedCard
from recur.payments.gateways.manual import NAME as MANUAL

if TYPE_CHECKING:
    from recur.payments.schemas import CardIn
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments")


@dataclass(frozen=True)
class Tokenized:
    """The card as the first gateway that answered keeps it, and its token at every gateway."""

    gateway: str
    card: TokenizedCard
    tokens: dict[str, str]
    router: Router  # the tenant's routing it was tokenized by, for the charge that follows


def tokenizing_order(router: Router) -> list[str]:
    """The usable gateways that take cards, in the order payments would try them."""
    named = [
        name for rule in router.rules for name in (*rule.gateways, *(s.gateway for s in rule.split))
    ]
    order: list[str] = []
    for name in [*named, routing.DEFAULT_GATEWAY, *sorted(router.credentials)]:
        if name not in order and name != MANUAL and name in router.credentials:
            order.append(name)
    return order


async def tokenize_everywhere(rt: Runtime, tenant_id: str, card: CardIn) -> Tokenized:
    """Tokenize the card at each of the tenant's card gateways (see the module docstring).

    Raises GatewayDecline when the first gateway that answers refuses the card, and
    ServiceUnavailable when no gateway could answer now.
    """
    router = await load_router(rt, tenant_id)
    names = tokenizing_order(router)

    async def ask(name: str) -> TokenizedCard | GatewayDecline | None:
        adapter = attempts.open_adapter(rt, RoutedGateway(name, router.credentials[name]))
        try:
            return await adapter.tokenize(card)
        except GatewayDecline as exc:
            return exc
        except Exception as exc:  # retriable, unknown, or worse: no token there this time
            log.warning("gateway %s could not tokenize a card: %s", name, type(exc).__name__)
            return None
        finally:
            await adapter.aclose()

    answers = await asyncio.gather(*(ask(name) for name in names))
    first = next(
        ((name, answer) for name, answer in zip(names, answers, strict=True) if answer is not None),
        None,
    )
    if first is None:
        raise ServiceUnavailable("no payment gateway could verify the card now: try again later")
    name, answer = first
    if isinstance(answer, GatewayDecline):
        raise answer
    tokens = {
        n: a.token for n, a in zip(names, answers, strict=True) if isinstance(a, TokenizedCard)
    }
    return Tokenized(name, answer, tokens, router)
