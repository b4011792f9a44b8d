"""Which gateways a payment is sent to: the tenant's routing rules over plain values.

A rule matches a payment when every condition it sets holds: `currency` equal, `amount_min <=
amount <= amount_max` (both bounds inclusive, in minor units), `card_brand` equal (a payment
without a card, such as a bank transfer, matches no rule that names a brand). Rules are tried by
`priority`, lowest first, ties in the order they were created (their time-ordered ids); the
first that matches decides, and no later rule is looked at.

A rule's action is either an ordered list of gateways, tried in that order (failover), or a
split by percentage: a draw in [0, 1) picks the first gateway, each with the chance of its
percent, and the split's other gateways follow in the order listed, as failover. The draw comes
from the payment id (`draw_for`), so a retry of the same payment takes the same route.

Gateways that cannot be used (disabled, not configured, credentials unreadable) are left out of
the route, and the reason says so; a route may end up empty, and the caller then has no gateway
to charge. With no matching rule, the payment goes to the built-in sandbox.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_GATEWAY = "sandbox"
MANUAL_GATEWAY = "manual"


@dataclass(frozen=True)
class Conditions:
    """What a payment must be for a rule to apply; None is "any"."""

    currency: str | None = None
    amount_min: int | None = None
    amount_max: int | None = None
    card_brand: str | None = None


@dataclass(frozen=True)
class Share:
    """One gateway's part of a split, in whole percent."""

    gateway: str
    percent: int


@dataclass(frozen=True)
class Rule:
    """A routing rule: exactly one of `gateways` (failover order) and `split` is non-empty."""

    id: str
    priority: int
    conditions: Conditions = Conditions()
    gateways: tuple[str, ...] = ()
    split: tuple[Share, ...] = ()


@dataclass(frozen=True)
class PaymentFacts:
    """What routing knows of a payment."""

    currency: str
    amount: int
    card_brand: str | None = None
    # `card`, or a manual method (`bank_transfer`, `cash`), which only the manual gateway takes.
    method: str = "card"


@dataclass(frozen=True)
class Route:
    """The gateways to try, in order, and why, in words for people."""

    gateways: tuple[str, ...]
    reason: str
    rule_id: str | None = None
    skipped: tuple[str, ...] = field(default=())


def draw_for(key: str) -> float:
    """A number in [0, 1), the same for the same key (a payment id) on every process."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def matches(conditions: Conditions, payment: PaymentFacts) -> bool:
    """Whether every condition set holds for the payment (amount bounds inclusive)."""
    return (
        (conditions.currency is None or conditions.currency == payment.currency)
        and (conditions.amount_min is None or payment.amount >= conditions.amount_min)
        and (conditions.amount_max is None or payment.amount <= conditions.amount_max)
        and (conditions.card_brand is None or conditions.card_brand == payment.card_brand)
    )


def pick_share(split: Sequence[Share], draw: float) -> int:
    """The index of the share `draw` falls in: share i owns [sum before i, sum through i) of
    100, so a uniform draw picks each with the chance of its percent."""
    if not 0.0 <= draw < 1.0:
        raise ValueError(f"draw must be in [0, 1), not {draw}")
    point = draw * 100
    upto = 0
    for index, share in enumerate(split):
        upto += share.percent
        if point < upto:
            return index
    # Only reachable if the percents sum to less than 100: the last share takes the rest.
    return len(split) - 1


def describe(conditions: Conditions) -> str:
    """The conditions in words: `currency EUR, amount 1000-5000, card visa`."""
    parts = []
    if conditions.currency is not None:
        parts.append(f"currency {conditions.currency}")
    low, high = conditions.amount_min, conditions.amount_max
    if low is not None and high is not None:
        parts.append(f"amount {low}-{high}")
    elif low is not None:
        parts.append(f"amount >= {low}")
    elif high is not None:
        parts.append(f"amount <= {high}")
    if conditions.card_brand is not None:
        parts.append(f"card {conditions.card_brand}")
    return ", ".join(parts) or "any payment"


def _ordered(rules: Sequence[Rule]) -> list[Rule]:
    return sorted(rules, key=lambda rule: (rule.priority, rule.id))


def choose_route(
    rules: Sequence[Rule],
    payment: PaymentFacts,
    draw: float,
    unusable: Mapping[str, str | None],
) -> Route:
    """The gateways to try for `payment`: those of the first matching rule by priority, or the
    sandbox when none matches. `unusable` maps a gateway's name to why it cannot be used now
    (`disabled`), or to None when it can; a name missing from it is `not configured`.
    Rules route cards: a bank transfer or cash goes to the manual gateway, whatever they say."""
    if payment.method != "card":
        return _route(f"a {payment.method} payment: manual", [MANUAL_GATEWAY], unusable, None)
    for rule in _ordered(rules):
        if not matches(rule.conditions, payment):
            continue
        head = f"rule {rule.id}: {describe(rule.conditions)}"
        if rule.split:
            index = pick_share(rule.split, draw)
            chosen = rule.split[index]
            others = [share.gateway for i, share in enumerate(rule.split) if i != index]
            candidates = [chosen.gateway, *others]
            action = f"split {chosen.percent}% {chosen.gateway} (drew {draw:.2f})"
            if others:
                action += ", then " + " then ".join(others)
        else:
            candidates = list(rule.gateways)
            action = " then ".join(candidates)
        return _route(f"{head} -> {action}", candidates, unusable, rule.id)
    default = [DEFAULT_GATEWAY]
    return _route(f"no rule matched: default {DEFAULT_GATEWAY}", default, unusable, None)


def _route(
    reason: str, candidates: list[str], unusable: Mapping[str, str | None], rule_id: str | None
) -> Route:
    why_not = {name: unusable.get(name, "not configured") for name in candidates}
    kept = tuple(name for name in candidates if why_not[name] is None)
    skipped = tuple(name for name in candidates if why_not[name] is not None)
    if skipped:
        reason += "; skipped " + ", ".join(f"{name} ({why_not[name]})" for name in skipped)
    if not kept:
        reason += "; no gateway left to try"
    return Route(gateways=kept, reason=reason, rule_id=rule_id, skipped=skipped)
