"""Incoming gateway webhooks: `POST /v1/gateways/{name}/webhooks`, verified, kept once, applied
once.

No API key comes with a webhook; the gateway's own signature is its authentication, and it is
checked with the secret of the tenant the webhook concerns:

1. The body names our references (Stripe: the PaymentIntent's or Refund's
   `metadata.recur_idempotency_key`, or the PaymentIntent a dispute is about; Adyen:
   `merchantReference`, our idempotency key, and `originalReference`, the payment's
   pspReference; the sandbox: its `idempotency_key` and references). They are looked up,
   unverified, only to find which tenant's payment or refund the webhook claims to concern.
2. The tenant's credentials for that gateway are decrypted and the adapter's `parse_webhook`
   verifies the signature with them (Stripe's `webhook_secret`, Adyen's `hmac_key`, the
   sandbox's `webhook_secret`). A webhook naming nothing we know, or whose signature fails, is
   a 400 and nothing is stored: another tenant's secret cannot settle this tenant's payment.
3. Read from the verified event, the references must lead to that same tenant.
4. The event is applied, each kind idempotent by the state it starts from: a charge settles
   a still-pending payment through `batch.settle`, as the gateway's answer would have; a refund
   event settles a pending refund (`refunds.settle_refund`); a dispute moves the payment's
   dispute (`disputes`). It is then stored in `gateway_events`, unique by (gateway, event id).
   A redelivery finds it stored and changes nothing; a crash between applying and storing is
   harmless, since applying it again finds the state already moved.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from recur.kit.db import UnitOfWork, insert_ignoring_conflicts
from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.payments import batch, disputes
from recur.payments.gateways import build_gateway
from recur.payments.gateways.adyen import NAME as ADYEN
from recur.payments.gateways.base import (
    ChargeResult,
    GatewayConfigError,
    GatewayWebhookEvent,
    RefundResult,
    WebhookKind,
    WebhookSignatureError,
)
from recur.payments.gateways.sandbox import NAME as SANDBOX
from recur.payments.gateways.stripe_objects import KEY_METADATA
from recur.payments.gateways.stripe_objects import NAME as STRIPE
from recur.payments.refunds import settle_refund
from recur.payments.tables import gateway_events, payment_attempts, payments, refunds
from recur.payments.tenant_gateways import gateway_credentials

if TYPE_CHECKING:
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments.webhooks")

WEBHOOK_GATEWAYS = (SANDBOX, STRIPE, ADYEN)
MAX_REFERENCE = 255


@dataclass(frozen=True)
class WebhookReceipt:
    """What became of one webhook: `duplicate` when it was received before."""

    gateway: str
    event_id: str
    duplicate: bool
    outcome: str


@dataclass(frozen=True)
class _Target:
    """The payment (and refund) a webhook is about."""

    payment: Any
    refund: Any = None

    @property
    def tenant_id(self) -> str:
        return str(self.payment.tenant_id)


def _unverified(gateway: str, why: str) -> InvalidRequest:
    # One answer whatever failed, so that the answer tells a caller without the secret nothing
    # (not even whether a payment exists); the log says which step failed.
    log.warning("%s webhook refused: %s", gateway, why)
    return InvalidRequest(f"the {gateway} webhook could not be verified", code="webhook_unverified")


async def receive_webhook(
    rt: Runtime, gateway: str, headers: Mapping[str, str], body: bytes
) -> WebhookReceipt:
    """Verify, store once and apply once one webhook of `gateway` (see the module docstring).

    InvalidRequest `webhook_unverified` when it cannot be verified; NotFound for a gateway that
    sends no webhooks.
    """
    if gateway not in WEBHOOK_GATEWAYS:
        raise NotFound(
            f"no webhooks are received from {gateway!r}: one of {', '.join(WEBHOOK_GATEWAYS)}",
            param="name",
        )
    keys, references = _claims(gateway, body)
    async with rt.uow() as uow:
        claimed = await _first_target(uow, gateway, keys, references)
    if claimed is None:
        raise _unverified(gateway, "it names no payment or refund of any tenant")
    tenant_id = claimed.tenant_id
    event = await _verified_event(rt, tenant_id, gateway, headers, body)
    if len(event.event_id) > MAX_REFERENCE:
        raise _unverified(gateway, "its event id is too long")

    async with rt.uow() as uow:
        seen = await uow.fetch_one(
            sa.select(gateway_events.c.outcome).where(
                gateway_events.c.gateway == gateway, gateway_events.c.event_id == event.event_id
            )
        )
        if seen is not None:
            return WebhookReceipt(gateway, event.event_id, True, seen.outcome)
        target = await _event_target(uow, gateway, event)
    if target is not None and target.tenant_id != tenant_id:
        raise _unverified(gateway, "its verified references lead to another tenant")

    outcome = await _apply(rt, tenant_id, gateway, event, target)
    async with rt.uow() as uow:
        stored = await uow.execute(
            insert_ignoring_conflicts(uow.conn, gateway_events).values(
                id=new_id("gwevt"),
                tenant_id=tenant_id,
                gateway=gateway,
                event_id=event.event_id,
                kind=event.kind.value,
                gateway_type=event.gateway_type[:100],
                payment_id=target.payment.id if target else None,
                refund_id=target.refund.id if target and target.refund is not None else None,
                outcome=outcome,
                received=rt.clock.now(),
            )
        )
        await uow.commit()
    log.info("%s webhook %s (%s): %s", gateway, event.event_id, event.gateway_type, outcome)
    return WebhookReceipt(gateway, event.event_id, stored.rowcount != 1, outcome)


async def _verified_event(
    rt: Runtime, tenant_id: str, gateway: str, headers: Mapping[str, str], body: bytes
) -> GatewayWebhookEvent:
    """The event, verified with the tenant's own credentials for the gateway."""
    credentials = await gateway_credentials(rt, tenant_id, gateway)
    if credentials is None:
        raise _unverified(gateway, f"tenant {tenant_id} has no readable {gateway} credentials")
    try:
        adapter = build_gateway(gateway, credentials, clock=rt.clock)
    except GatewayConfigError as exc:
        raise _unverified(gateway, f"tenant {tenant_id}'s credentials: {exc.code}") from None
    try:
        return adapter.parse_webhook(headers, body)
    except WebhookSignatureError as exc:
        raise _unverified(gateway, f"{exc.code} for tenant {tenant_id}") from None
    finally:
        await adapter.aclose()


def _claims(gateway: str, body: bytes) -> tuple[list[str], list[str]]:
    """Our keys and the gateway's references a webhook's body names, read before it is
    verified, only to find whose secret verifies it."""
    try:
        document = orjson.loads(body)
        if gateway == STRIPE:
            found = document["data"]["object"]
            metadata = found.get("metadata") or {}
            keys = [metadata.get(KEY_METADATA)]
            references = [found.get("id"), found.get("payment_intent"), found.get("charge")]
        elif gateway == ADYEN:
            found = document["notificationItems"][0]["NotificationRequestItem"]
            keys = [found.get("merchantReference")]
            references = [found.get("pspReference"), found.get("originalReference")]
        else:
            found = document["data"]
            keys = [found.get("idempotency_key")]
            references = [found.get("charge_reference"), found.get("refund_reference")]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError):
        return [], []

    def usable(values: list[Any]) -> list[str]:
        return [v for v in values if isinstance(v, str) and 0 < len(v) <= MAX_REFERENCE]

    return usable(keys), usable(references)


async def _first_target(
    uow: UnitOfWork, gateway: str, keys: list[str], references: list[str]
) -> _Target | None:
    for key in keys:
        target = await _by_key(uow, key)
        if target is not None:
            return target
    for reference in references:
        target = await _by_reference(uow, gateway, reference)
        if target is not None:
            return target
    return None


async def _event_target(
    uow: UnitOfWork, gateway: str, event: GatewayWebhookEvent
) -> _Target | None:
    """The payment (and refund) the verified event is about, whatever tenant it belongs to."""
    if event.kind == WebhookKind.OTHER:
        return None
    refund_event = event.kind in (WebhookKind.REFUND_SUCCEEDED, WebhookKind.REFUND_FAILED)
    if event.idempotency_key:
        target = await _by_key(uow, event.idempotency_key)
        if target is not None and (target.refund is not None) == refund_event:
            return target
    reference = event.refund_reference if refund_event else event.charge_reference
    if reference:
        target = await _by_reference(uow, gateway, reference)
        if target is not None and (target.refund is not None) == refund_event:
            return target
    return None


async def payment_id_for_key(uow: UnitOfWork, idempotency_key: str) -> str | None:
    """The payment a charge's idempotency key belongs to: its attempt's payment, or the
    payment itself (charges made with the payment id as key)."""
    attempt = await uow.fetch_one(
        sa.select(payment_attempts.c.payment_id).where(
            payment_attempts.c.idempotency_key == idempotency_key
        )
    )
    if attempt is not None:
        return str(attempt.payment_id)
    row = await uow.fetch_one(sa.select(payments.c.id).where(payments.c.id == idempotency_key))
    return str(row.id) if row is not None else None


async def _by_key(uow: UnitOfWork, key: str) -> _Target | None:
    refund = await uow.fetch_one(sa.select(refunds).where(refunds.c.id == key))
    if refund is not None:
        payment = await uow.fetch_one(sa.select(payments).where(payments.c.id == refund.payment_id))
        return _Target(payment, refund)
    payment_id = await payment_id_for_key(uow, key)
    if payment_id is None:
        return None
    payment = await uow.fetch_one(sa.select(payments).where(payments.c.id == payment_id))
    return _Target(payment) if payment is not None else None


async def _by_reference(uow: UnitOfWork, gateway: str, reference: str) -> _Target | None:
    payment = await uow.fetch_one(
        sa.select(payments)
        .where(payments.c.gateway == gateway, payments.c.gateway_reference == reference)
        .limit(1)
    )
    if payment is None:
        attempt = await uow.fetch_one(
            sa.select(payment_attempts.c.payment_id)
            .where(
                payment_attempts.c.gateway == gateway,
                payment_attempts.c.gateway_reference == reference,
            )
            .limit(1)
        )
        if attempt is not None:
            payment = await uow.fetch_one(
                sa.select(payments).where(payments.c.id == attempt.payment_id)
            )
    if payment is not None:
        return _Target(payment)
    found = await uow.fetch_one(
        sa.select(refunds, payments.c.gateway.label("payment_gateway"))
        .join(payments, payments.c.id == refunds.c.payment_id)
        .where(refunds.c.gateway_reference == reference, payments.c.gateway == gateway)
        .limit(1)
    )
    if found is None:
        return None
    payment = await uow.fetch_one(sa.select(payments).where(payments.c.id == found.payment_id))
    return _Target(payment, found)


async def _charging_at(rt: Runtime, payment: Any, gateway: str) -> bool:
    """Whether the pending payment's live charge is at `gateway`: its attempt still open or of
    unknown outcome there (a payment charged before attempts were kept: its own gateway)."""
    async with rt.uow() as uow:
        attempts = await uow.fetch_all(
            sa.select(payment_attempts.c.gateway, payment_attempts.c.outcome).where(
                payment_attempts.c.payment_id == payment.id
            )
        )
    if not attempts:
        return bool(payment.gateway == gateway)
    return any(a.gateway == gateway and a.outcome in (None, "unknown") for a in attempts)


async def _apply(
    rt: Runtime,
    tenant_id: str,
    gateway: str,
    event: GatewayWebhookEvent,
    target: _Target | None,
) -> str:
    """Apply the event; what was done, as stored in `gateway_events.outcome`."""
    if event.kind == WebhookKind.OTHER:
        return "ignored"
    if target is None:
        return "unknown_object"
    payment = target.payment
    if event.kind in (WebhookKind.CHARGE_SUCCEEDED, WebhookKind.CHARGE_FAILED):
        if payment.status != "pending":
            return "already_settled"
        if not await _charging_at(rt, payment, gateway):
            return "other_gateway"
        if (event.amount is not None and event.amount != payment.amount) or (
            event.currency is not None and event.currency.upper() != payment.currency
        ):
            log.warning(
                "%s webhook %s: amount differs from payment %s", gateway, event.event_id, payment.id
            )
            return "amount_mismatch"
        if event.kind == WebhookKind.CHARGE_SUCCEEDED:
            result = ChargeResult(True, event.charge_reference or payment.gateway_reference)
        else:
            result = ChargeResult(
                False,
                event.charge_reference or payment.gateway_reference,
                event.failure_code or "card_declined",
                event.failure_message or "The gateway declined the payment.",
            )
        settled = await batch.settle(rt, tenant_id, {payment.id: result})
        await batch.dun_failed(rt, tenant_id, settled.values())
        return "settled" if settled else "already_settled"
    if event.kind in (WebhookKind.REFUND_SUCCEEDED, WebhookKind.REFUND_FAILED):
        succeeded = event.kind == WebhookKind.REFUND_SUCCEEDED
        refund_result = RefundResult(
            succeeded,
            event.refund_reference,
            None if succeeded else event.failure_code or "refund_failed",
            None if succeeded else event.failure_message or "The gateway could not refund.",
        )
        refund = await settle_refund(rt, tenant_id, target.refund.id, refund_result)
        return "settled" if refund is not None else "already_settled"
    if event.kind == WebhookKind.DISPUTE_OPENED:
        opened = await disputes.open_dispute(
            rt, tenant_id, payment.id, event.amount, event.currency
        )
        return "dispute_opened" if opened is not None else "no_change"
    if event.dispute_outcome not in ("won", "lost"):
        return "ignored"
    closed = await disputes.close_dispute(
        rt, tenant_id, payment.id, event.dispute_outcome, event.amount, event.currency
    )
    return f"dispute_{event.dispute_outcome}" if closed is not None else "no_change"
