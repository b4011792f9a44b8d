"""A tenant's payment gateways, and the route of a payment through them.

A tenant configures each gateway once (`gw_...`), with its credentials, which `credentials`
checks and keeps only encrypted. The API shows a summary of them; the clear credentials leave
this module only in a `RoutedGateway`, whose repr hides them, for the adapter that charges with
them. Nothing here logs them.

The routing rules that choose between gateways are kept by `routing_rules`; the choice itself is
the pure `routing.choose_route`, fed by `usable_gateways` (see `attempts.Router`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.fernet import InvalidToken, MultiFernet
from sqlalchemy.exc import IntegrityError

from recur.kit.db import UnitOfWork
from recur.kit.errors import Conflict, NotFound
from recur.kit.ids import new_id
from recur.kit.pagination import Page, fetch_page, to_page
from recur.payments import routing
from recur.payments.checks import _check_filters, _check_id
from recur.payments.credentials import (
    check_credentials,
    credentials_cipher,
    decrypt_credentials,
    encrypt_credentials,
    summarize,
)
from recur.payments.gateway_config_schemas import Gateway, GatewayCreate, GatewayUpdate
from recur.payments.gateways.manual import NAME as MANUAL
from recur.payments.tables import payment_gateways, payment_routing_rules

# Gateways every tenant has, as they are by default, without configuring them.
NEEDS_NO_CONFIG = (routing.DEFAULT_GATEWAY, MANUAL)

if TYPE_CHECKING:
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments.gateways")


@dataclass(frozen=True)
class RoutedGateway:
    """A gateway to try, with what its adapter needs to reach the tenant's account."""

    name: str
    credentials: dict[str, str] = field(repr=False)


def to_gateway(row: Any) -> Gateway:
    return Gateway(
        id=row.id,
        name=row.name,
        enabled=row.enabled,
        credentials_summary=row.summary,
        created=row.created,
        updated=row.updated,
    )


# Repository


async def gateway_row(uow: UnitOfWork, tenant_id: str, gateway_id: str) -> Any:
    return await uow.fetch_one(
        sa.select(payment_gateways).where(
            payment_gateways.c.tenant_id == tenant_id, payment_gateways.c.id == gateway_id
        )
    )


async def gateway_rows(uow: UnitOfWork, tenant_id: str) -> Sequence[Any]:
    """Every gateway the tenant configured (at most one per name)."""
    return await uow.fetch_all(
        sa.select(payment_gateways).where(payment_gateways.c.tenant_id == tenant_id)
    )


def to_routing_rule(row: Any) -> routing.Rule:
    return routing.Rule(
        id=row.id,
        priority=row.priority,
        conditions=routing.Conditions(
            currency=row.currency,
            amount_min=row.amount_min,
            amount_max=row.amount_max,
            card_brand=row.card_brand,
        ),
        gateways=tuple(row.gateways or ()),
        split=tuple(routing.Share(s["gateway"], s["percent"]) for s in row.split or ()),
    )


async def rules_of(uow: UnitOfWork, tenant_id: str) -> list[routing.Rule]:
    """Every routing rule of the tenant, in the order they are tried."""
    rows = await uow.fetch_all(
        sa.select(payment_routing_rules)
        .where(payment_routing_rules.c.tenant_id == tenant_id)
        .order_by(payment_routing_rules.c.priority, payment_routing_rules.c.id)
    )
    return [to_routing_rule(row) for row in rows]


def gateways_named(rule: routing.Rule) -> list[str]:
    return list(rule.gateways) + [share.gateway for share in rule.split]


# Service


async def create_gateway(rt: Runtime, tenant_id: str, params: GatewayCreate) -> Gateway:
    """Configure one of the tenant's gateways; one per name. Its credentials are checked and
    stored encrypted (Conflict `credentials_key_missing` when no key is configured)."""
    credentials = check_credentials(params.name, params.credentials)
    token = encrypt_credentials(
        credentials_cipher(rt.settings), tenant_id, params.name, credentials
    )
    now = rt.clock.now()
    gateway_id = new_id("gw")
    async with rt.uow() as uow:
        existing = await uow.fetch_one(
            sa.select(payment_gateways.c.id).where(
                payment_gateways.c.tenant_id == tenant_id, payment_gateways.c.name == params.name
            )
        )
        if existing is not None:
            raise _already_configured(params.name, existing.id)
        try:
            await uow.execute(
                sa.insert(payment_gateways).values(
                    id=gateway_id,
                    tenant_id=tenant_id,
                    name=params.name,
                    credentials_encrypted=token,
                    summary=summarize(params.name, credentials),
                    enabled=params.enabled,
                    created=now,
                    updated=now,
                )
            )
            row = await gateway_row(uow, tenant_id, gateway_id)
            await uow.commit()
        except IntegrityError:  # another request configured it meanwhile
            raise _already_configured(params.name, None) from None
    return to_gateway(row)


def _already_configured(name: str, gateway_id: str | None) -> Conflict:
    where = f" as {gateway_id}: update it there" if gateway_id else ""
    return Conflict(
        f"the {name} gateway is already configured{where}",
        code="gateway_exists",
        param="name",
    )


async def get_gateway(rt: Runtime, tenant_id: str, gateway_id: str) -> Gateway:
    """One of the tenant's gateways (its credentials' summary only)."""
    _check_id(gateway_id, "gateway_id", "gateway")
    async with rt.uow() as uow:
        row = await gateway_row(uow, tenant_id, gateway_id)
    if row is None:
        raise NotFound(f"no such gateway: {gateway_id}", param="gateway_id")
    return to_gateway(row)


async def list_gateways(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None
) -> Page[Gateway]:
    """The tenant's gateways, newest first."""
    _check_filters(starting_after=starting_after)
    stmt = sa.select(payment_gateways).where(payment_gateways.c.tenant_id == tenant_id)
    async with rt.uow() as uow:
        rows, has_more = await fetch_page(uow, stmt, payment_gateways.c.id, limit, starting_after)
    return to_page(rows, has_more, to_gateway)


async def update_gateway(
    rt: Runtime, tenant_id: str, gateway_id: str, params: GatewayUpdate
) -> Gateway:
    """Replace the gateway's credentials and/or enable or disable it."""
    _check_id(gateway_id, "gateway_id", "gateway")
    async with rt.uow() as uow:
        row = await gateway_row(uow, tenant_id, gateway_id)
        if row is None:
            raise NotFound(f"no such gateway: {gateway_id}", param="gateway_id")
        values: dict[str, Any] = {}
        if params.credentials is not None:
            credentials = check_credentials(row.name, params.credentials)
            values["credentials_encrypted"] = encrypt_credentials(
                credentials_cipher(rt.settings), tenant_id, row.name, credentials
            )
            values["summary"] = summarize(row.name, credentials)
        if params.enabled is not None:
            values["enabled"] = params.enabled
        if values:
            await uow.execute(
                sa.update(payment_gateways)
                .where(payment_gateways.c.id == gateway_id)
                .values(**values, updated=rt.clock.now())
            )
            row = await gateway_row(uow, tenant_id, gateway_id)
            await uow.commit()
    return to_gateway(row)


async def delete_gateway(rt: Runtime, tenant_id: str, gateway_id: str) -> Gateway:
    """Forget the gateway and its credentials. Conflict while a routing rule names it
    (except the sandbox, which is always available)."""
    _check_id(gateway_id, "gateway_id", "gateway")
    async with rt.uow() as uow:
        row = await gateway_row(uow, tenant_id, gateway_id)
        if row is None:
            raise NotFound(f"no such gateway: {gateway_id}", param="gateway_id")
        if row.name != routing.DEFAULT_GATEWAY:
            naming = [r.id for r in await rules_of(uow, tenant_id) if row.name in gateways_named(r)]
            if naming:
                raise Conflict(
                    f"the routing rule {naming[0]} sends payments to {row.name}: change or "
                    "delete it first, or disable the gateway",
                    code="gateway_in_use",
                )
        await uow.execute(sa.delete(payment_gateways).where(payment_gateways.c.id == gateway_id))
        await uow.commit()
    return to_gateway(row)


async def usable_gateways(
    uow: UnitOfWork, cipher: MultiFernet | None, tenant_id: str
) -> tuple[dict[str, str | None], dict[str, dict[str, str]]]:
    """For `routing.choose_route`: each gateway's name and why it cannot be used (None when
    it can); and the clear credentials of those that can. The sandbox and the manual gateway
    need no credentials: they are available unless the tenant configured them disabled."""
    unusable: dict[str, str | None] = dict.fromkeys(NEEDS_NO_CONFIG)
    credentials: dict[str, dict[str, str]] = {name: {} for name in NEEDS_NO_CONFIG}
    for row in await gateway_rows(uow, tenant_id):
        credentials.pop(row.name, None)
        if not row.enabled:
            unusable[row.name] = "disabled"
            continue
        clear = decrypt_credentials(cipher, tenant_id, row.name, row.credentials_encrypted)
        if clear is None:
            # The key that made the token is no longer configured, or the row was tampered
            # with. Said in the route's reason; the payment goes on with the next gateway.
            log.warning("credentials of gateway %s of tenant %s are unreadable", row.id, tenant_id)
            unusable[row.name] = "credentials unreadable"
            continue
        unusable[row.name] = None
        credentials[row.name] = clear
    return unusable, credentials


async def rotate_credentials(rt: Runtime) -> tuple[int, int]:
    """Encrypt every stored credentials again with the first configured key, so that the
    others can be dropped. Returns (rotated, unreadable): an unreadable token is left as is."""
    cipher = credentials_cipher(rt.settings)
    if cipher is None:
        raise Conflict(
            "no RECUR_GATEWAY_CREDENTIALS_KEY is configured", code="credentials_key_missing"
        )
    rotated = unreadable = 0
    async with rt.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(payment_gateways.c.id, payment_gateways.c.credentials_encrypted).where(
                payment_gateways.c.credentials_encrypted.is_not(None)
            )
        )
        for row in rows:
            try:
                token = cipher.rotate(row.credentials_encrypted.encode()).decode()
            except InvalidToken:
                unreadable += 1
                continue
            await uow.execute(
                sa.update(payment_gateways)
                .where(payment_gateways.c.id == row.id)
                .values(credentials_encrypted=token)
            )
            rotated += 1
        await uow.commit()
    return rotated, unreadable
