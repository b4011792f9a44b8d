"""The adapter of one of a tenant's gateways, built with that tenant's own credentials.

Refunds go through the gateway that took the payment, and a gateway's webhook is verified with
the secret of the tenant it concerns: both build the adapter here, from the tenant's gateway
configuration (`gateway_config`), decrypted only for the call. A disabled gateway still
refunds and still verifies: disabling it stops new charges, not the money already taken there.
An HTTP gateway is reached at its RECUR_GATEWAY_BASE_URLS entry when it has one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from recur.kit.errors import Conflict
from recur.payments.credentials import credentials_cipher, decrypt_credentials
from recur.payments.gateway_config import NEEDS_NO_CONFIG
from recur.payments.gateways import build_gateway
from recur.payments.gateways.base import GatewayConfigError, PaymentGateway
from recur.payments.gateways.manual import MarkLookup
from recur.payments.tables import payment_gateways

if TYPE_CHECKING:
    from recur.runtime import Runtime


async def gateway_credentials(rt: Runtime, tenant_id: str, name: str) -> dict[str, str] | None:
    """The tenant's clear credentials for the gateway `name`: {} for the sandbox and the manual
    gateway as they are by default; None when the tenant has not configured it, or when no
    configured key opens them."""
    async with rt.uow() as uow:
        row = await uow.fetch_one(
            sa.select(payment_gateways.c.credentials_encrypted).where(
                payment_gateways.c.tenant_id == tenant_id, payment_gateways.c.name == name
            )
        )
    if row is None:
        return {} if name in NEEDS_NO_CONFIG else None
    return decrypt_credentials(
        credentials_cipher(rt.settings), tenant_id, name, row.credentials_encrypted
    )


async def tenant_gateway(
    rt: Runtime, tenant_id: str, name: str, *, operator_marks: MarkLookup | None = None
) -> PaymentGateway:
    """The adapter of the tenant's gateway `name` (closed by the caller with `aclose`).
    Conflict `gateway_unavailable` when the tenant cannot use it."""
    credentials = await gateway_credentials(rt, tenant_id, name)
    if credentials is None:
        raise Conflict(
            f"the {name} gateway is not configured for this account, or its credentials "
            "cannot be read",
            code="gateway_unavailable",
        )
    try:
        return build_gateway(
            name,
            credentials,
            clock=rt.clock,
            base_url=rt.settings.gateway_base_urls.get(name),
            operator_marks=operator_marks,
        )
    except GatewayConfigError as exc:
        raise Conflict(exc.message, code="gateway_unavailable") from None
