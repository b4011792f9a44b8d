"""A tenant's routing rules (`rr_...`): kept, checked and listed in the order they are tried.

What a rule means is `routing`'s docstring. A rule names only gateways the tenant configured
(any of them, enabled or not: disabling one is how a tenant takes it out of every route at
once) or the sandbox, which is always available.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from recur.kit.db import UnitOfWork
from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.pagination import Page, to_page
from recur.payments import routing
from recur.payments.checks import _check_filters, _check_id, _currency
from recur.payments.gateway_config import gateway_rows
from recur.payments.gateway_config_schemas import (
    RoutingConditions,
    RoutingRule,
    RoutingRuleCreate,
    RoutingRuleUpdate,
    RoutingShare,
)
from recur.payments.tables import payment_routing_rules as rules

if TYPE_CHECKING:
    from recur.runtime import Runtime


def to_rule(row: Any) -> RoutingRule:
    return RoutingRule(
        id=row.id,
        priority=row.priority,
        conditions=RoutingConditions(
            currency=row.currency,
            amount_min=row.amount_min,
            amount_max=row.amount_max,
            card_brand=row.card_brand,
        ),
        gateways=row.gateways,
        split=[RoutingShare(**share) for share in row.split] if row.split else None,
        created=row.created,
        updated=row.updated,
    )


async def _rule_row(uow: UnitOfWork, tenant_id: str, rule_id: str) -> Any:
    _check_id(rule_id, "rule_id", "routing rule")
    row = await uow.fetch_one(
        sa.select(rules).where(rules.c.tenant_id == tenant_id, rules.c.id == rule_id)
    )
    if row is None:
        raise NotFound(f"no such routing rule: {rule_id}", param="rule_id")
    return row


def _conditions(conditions: RoutingConditions) -> dict[str, Any]:
    low, high = conditions.amount_min, conditions.amount_max
    if low is not None and high is not None and low > high:
        raise InvalidRequest(
            "conditions.amount_max: must not be below amount_min (both are inclusive)",
            param="conditions.amount_max",
        )
    currency = conditions.currency
    return {
        "currency": None if currency is None else _currency(currency, "conditions.currency"),
        "amount_min": low,
        "amount_max": high,
        "card_brand": conditions.card_brand,
    }


async def _action(
    uow: UnitOfWork,
    tenant_id: str,
    gateways: Sequence[str] | None,
    split: Sequence[RoutingShare] | None,
) -> dict[str, Any]:
    """The rule's action as stored: exactly one of `gateways` and `split`, naming only
    gateways the tenant can route to, each once, percentages summing to 100."""
    if (gateways is None) == (split is None):
        param = "gateways" if gateways is None else "split"
        raise InvalidRequest(
            "give either gateways (an ordered list) or split (percentages), not "
            + ("neither" if gateways is None else "both"),
            param=param,
        )
    if gateways is not None:
        names = list(gateways)
        params = [f"gateways.{i}" for i in range(len(names))]
    else:
        assert split is not None
        names = [share.gateway for share in split]
        params = [f"split.{i}.gateway" for i in range(len(names))]
        if sum(share.percent for share in split) != 100:
            raise InvalidRequest("split: the percentages must sum to 100", param="split")
    # Read committed: a gateway deleted at this very moment may still pass; a route then
    # skips it as not configured.
    configured = {row.name for row in await gateway_rows(uow, tenant_id)}
    configured.add(routing.DEFAULT_GATEWAY)
    seen: Counter[str] = Counter()
    for name, param in zip(names, params, strict=True):
        seen[name] += 1
        if seen[name] > 1:
            raise InvalidRequest(f"{param}: {name} is named twice", param=param)
        if name not in configured:
            raise InvalidRequest(
                f"{param}: the {name} gateway is not configured (POST /v1/gateways first)",
                param=param,
            )
    if split is not None:
        return {"gateways": None, "split": [share.model_dump() for share in split]}
    return {"gateways": names, "split": None}


async def create_rule(rt: Runtime, tenant_id: str, params: RoutingRuleCreate) -> RoutingRule:
    """A new routing rule of the tenant."""
    conditions = _conditions(params.conditions)
    now = rt.clock.now()
    rule_id = new_id("rr")
    async with rt.uow() as uow:
        action = await _action(uow, tenant_id, params.gateways, params.split)
        await uow.execute(
            sa.insert(rules).values(
                id=rule_id,
                tenant_id=tenant_id,
                priority=params.priority,
                **conditions,
                **action,
                created=now,
                updated=now,
            )
        )
        row = await _rule_row(uow, tenant_id, rule_id)
        await uow.commit()
    return to_rule(row)


async def get_rule(rt: Runtime, tenant_id: str, rule_id: str) -> RoutingRule:
    """One routing rule of the tenant."""
    async with rt.uow() as uow:
        return to_rule(await _rule_row(uow, tenant_id, rule_id))


async def list_rules(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None
) -> Page[RoutingRule]:
    """The tenant's routing rules in the order they are tried: by priority, then oldest."""
    _check_filters(starting_after=starting_after)
    stmt = sa.select(rules).where(rules.c.tenant_id == tenant_id)
    async with rt.uow() as uow:
        if starting_after is not None:
            cursor = await uow.fetch_one(
                sa.select(rules.c.priority).where(
                    rules.c.tenant_id == tenant_id, rules.c.id == starting_after
                )
            )
            if cursor is None:
                raise InvalidRequest(
                    f"starting_after: no such routing rule: {starting_after}",
                    param="starting_after",
                )
            stmt = stmt.where(
                sa.tuple_(rules.c.priority, rules.c.id) > (cursor.priority, starting_after)
            )
        rows = await uow.fetch_all(stmt.order_by(rules.c.priority, rules.c.id).limit(limit + 1))
    return to_page(rows[:limit], len(rows) > limit, to_rule)


async def update_rule(
    rt: Runtime, tenant_id: str, rule_id: str, params: RoutingRuleUpdate
) -> RoutingRule:
    """Change a rule's priority, conditions (replaced whole) or action."""
    values: dict[str, Any] = {}
    if params.priority is not None:
        values["priority"] = params.priority
    if params.conditions is not None:
        values.update(_conditions(params.conditions))
    async with rt.uow() as uow:
        await _rule_row(uow, tenant_id, rule_id)
        if params.gateways is not None or params.split is not None:
            values.update(await _action(uow, tenant_id, params.gateways, params.split))
        if values:
            await uow.execute(
                sa.update(rules)
                .where(rules.c.tenant_id == tenant_id, rules.c.id == rule_id)
                .values(**values, updated=rt.clock.now())
            )
        row = await _rule_row(uow, tenant_id, rule_id)
        await uow.commit()
    return to_rule(row)


async def delete_rule(rt: Runtime, tenant_id: str, rule_id: str) -> RoutingRule:
    """Delete a routing rule; payments it matched fall to the next rule."""
    async with rt.uow() as uow:
        row = await _rule_row(uow, tenant_id, rule_id)
        await uow.execute(sa.delete(rules).where(rules.c.id == rule_id))
        await uow.commit()
    return to_rule(row)
