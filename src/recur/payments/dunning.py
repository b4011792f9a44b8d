"""Dunning: retrying a subscription's failed renewal charge on the tenant's schedule.

A failed charge of a subscription's order opens a dunning record, once per order. A
subscription that never paid (`incomplete`) gets none: it ends with its first period instead.
Retries fall on first_failed_at + retry_days[n] in the subscription's time (its test clock's,
or the real one), anchored like periods, so a late run never shifts the schedule. Each retry
charges the order through the normal path, so each attempt is a payment record on the order.
A card that becomes the customer's default is tried at once; that counts as an attempt.

Success is left to the usual events (order paid, subscription active). After the last failed
retry the record is `exhausted` and `dunning.exhausted` tells orders (uncollectible) and
subscriptions (canceled or unpaid, by the tenant's setting).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.payments import repository as repo
from recur.payments.schemas import (
    DunningExhausted,
    DunningRunResult,
    DunningSettings,
    DunningSettingsUpdate,
    FinalAction,
)
from recur.payments.service import OUTBOX, charge_order

if TYPE_CHECKING:
    from recur.runtime import Runtime

log = logging.getLogger("recur.dunning")

DEFAULT_RETRY_DAYS = [1, 3, 5, 7]
DEFAULT_FINAL_ACTION: FinalAction = "cancel"
# How long a claimed record stays with the worker retrying it (wall-clock time).
LEASE = timedelta(seconds=60)
BATCH_SIZE = 200
# A subscription in one of these states gets no dunning: never paid, or over.
NO_DUNNING = ("incomplete", "canceled", "unpaid")

Outcome = Literal["recovered", "failed", "exhausted", "closed", "unknown"]


async def get_settings(rt: Runtime, tenant_id: str) -> DunningSettings:
    """The tenant's retry schedule and final action (the defaults until it sets them)."""
    async with rt.uow() as uow:
        row = await repo.get_dunning_settings(uow, tenant_id)
    if row is None:
        return DunningSettings(retry_days=DEFAULT_RETRY_DAYS, final_action=DEFAULT_FINAL_ACTION)
    return DunningSettings(retry_days=row.retry_days, final_action=row.final_action)


async def update_settings(
    rt: Runtime, tenant_id: str, params: DunningSettingsUpdate
) -> DunningSettings:
    """Change the tenant's schedule; it applies to the next retry of every open record."""
    current = await get_settings(rt, tenant_id)
    settings = DunningSettings(
        retry_days=params.retry_days if params.retry_days is not None else current.retry_days,
        final_action=params.final_action or current.final_action,
    )
    async with rt.uow() as uow:
        await repo.save_dunning_settings(
            uow, tenant_id, settings.retry_days, settings.final_action, rt.clock.now()
        )
        await uow.commit()
    return settings


async def _clock_now(rt: Runtime, tenant_id: str, test_clock_id: str | None) -> datetime:
    """The time the subscription lives in: its test clock's, or the real one."""
    if test_clock_id is None:
        return rt.clock.now()
    return (await rt.subscriptions.get_test_clock(tenant_id, test_clock_id)).frozen_time


async def open_after_failure(
    rt: Runtime,
    tenant_id: str,
    *,
    order_id: str,
    subscription_id: str,
    customer_id: str,
    payment_method_id: str | None,
    failed_at: datetime | None = None,
) -> None:
    """Start dunning for a subscription order whose charge failed; nothing if it has started.

    Retries count from the failure (`failed_at`, on the real clock), not from when this record
    is written: the two differ when the process is slow or restarts in between.
    """
    async with rt.uow() as uow:
        if await repo.get_dunning(uow, tenant_id, order_id) is not None:
            return  # a retry failing: the record is there already
    subscription = await rt.subscriptions.get_subscription(tenant_id, subscription_id)
    if subscription.status in NO_DUNNING:
        return
    if failed_at is not None and subscription.test_clock_id is None:
        now = failed_at
    else:
        now = await _clock_now(rt, tenant_id, subscription.test_clock_id)
    settings = await get_settings(rt, tenant_id)
    async with rt.uow() as uow:
        opened = await repo.insert_dunning_if_absent(
            uow,
            {
                "order_id": order_id,
                "tenant_id": tenant_id,
                "customer_id": customer_id,
                "subscription_id": subscription_id,
                "test_clock_id": subscription.test_clock_id,
                "status": "open",
                "attempts": 0,
                "first_failed_at": now,
                "next_retry_at": now + timedelta(days=settings.retry_days[0]),
                "last_payment_method_id": payment_method_id,
                "created": rt.clock.now(),
                "updated": rt.clock.now(),
            },
        )
        await uow.commit()
    if opened:
        log.info("dunning opened for order %s", order_id)
        # Canceled since we looked: its `subscription.canceled` closed the records there were
        # then, not this one, and a canceled subscription gets no dunning.
        subscription = await rt.subscriptions.get_subscription(tenant_id, subscription_id)
        if subscription.status in NO_DUNNING:
            async with rt.uow() as uow:
                await repo.update_dunning(
                    uow,
                    tenant_id,
                    order_id,
                    {"status": "closed", "next_retry_at": None, "updated": rt.clock.now()},
                )
                await uow.commit()


async def _close(rt: Runtime, row: Any, status: str) -> None:
    async with rt.uow() as uow:
        await repo.update_dunning(
            uow,
            row.tenant_id,
            row.order_id,
            {
                "status": status,
                "next_retry_at": None,
                "claimed_until": None,
                "updated": rt.clock.now(),
            },
        )
        await uow.commit()


async def _attempt(rt: Runtime, row: Any, now: datetime) -> Outcome:
    """Charge a claimed record's order once more, as of `now` in its clock, and record how it
    went: recovered, the next anchored retry, or exhausted after the last one."""
    try:
        order = await rt.orders.get(row.tenant_id, row.order_id)
    except NotFound:
        await _close(rt, row, "closed")
        return "closed"
    if order.status != "open" or order.amount_due <= 0:
        # Paid another way, voided or written off: nothing left to collect.
        await _close(rt, row, "recovered" if order.status == "paid" else "closed")
        return "closed"
    payment_method_id = None
    try:
        payment = await charge_order(rt, row.tenant_id, row.order_id)
    except InvalidRequest as exc:
        if exc.code != "no_payment_method":
            raise
        succeeded = False  # nothing to charge: a failed attempt all the same
    except Conflict:
        # Paid, or being paid, meanwhile. The lease keeps other workers off until the charge
        # under way settles; the next pass finds the order paid, or retries it.
        return "unknown"
    else:
        succeeded = payment.status == "succeeded"
        payment_method_id = payment.payment_method_id
    settings = await get_settings(rt, row.tenant_id)
    async with rt.uow() as uow:
        current = await repo.get_dunning(uow, row.tenant_id, row.order_id, for_update=True)
        if current is None or current.status != "open":
            return "closed"
        values: dict[str, Any] = {
            "last_payment_method_id": payment_method_id,
            "claimed_until": None,
            "updated": rt.clock.now(),
        }
        if succeeded:
            outcome: Outcome = "recovered"
            values.update(status="recovered", next_retry_at=None)
        else:
            attempts = current.attempts + 1
            values["attempts"] = attempts
            if attempts < len(settings.retry_days):
                outcome = "failed"
                values["next_retry_at"] = current.first_failed_at + timedelta(
                    days=settings.retry_days[attempts]
                )
            else:
                outcome = "exhausted"
                values.update(status="exhausted", next_retry_at=None)
                event = DunningExhausted(
                    order_id=row.order_id,
                    subscription_id=row.subscription_id,
                    customer_id=row.customer_id,
                    final_action=settings.final_action,
                    attempts=attempts,
                    exhausted_at=now,
                )
                await OUTBOX.record(
                    uow,
                    row.tenant_id,
                    "dunning.exhausted",
                    event.model_dump(mode="json"),
                    rt.clock.now(),
                )
        await repo.update_dunning(uow, row.tenant_id, row.order_id, values)
        await uow.commit()
    log.info("dunning retry of order %s: %s", row.order_id, outcome)
    return outcome


def _count(result: DunningRunResult, outcome: Outcome | Literal["error"]) -> None:
    if outcome == "recovered":
        result.recovered += 1
    elif outcome == "failed":
        result.failed += 1
    elif outcome == "exhausted":
        result.exhausted += 1
    elif outcome == "closed":
        result.closed += 1
    elif outcome == "error":
        result.errors += 1


async def run_due_retries(
    rt: Runtime,
    now: datetime | None = None,
    *,
    test_clock_id: str | None = None,
    tenant_id: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> DunningRunResult:
    """Retry every open record due by `now` on one clock (the real one unless
    `test_clock_id`), of one tenant or all. Safe to run again, and beside other workers."""
    now = now or rt.clock.now()
    result = DunningRunResult()
    while True:
        wall_now = rt.clock.now()
        async with rt.uow() as uow:
            claimed = await repo.claim_due_dunning(
                uow,
                now=now,
                wall_now=wall_now,
                lease_until=wall_now + LEASE,
                test_clock_id=test_clock_id,
                tenant_id=tenant_id,
                limit=batch_size,
            )
            await uow.commit()
        if not claimed:
            return result
        for row in claimed:
            outcome: Outcome | Literal["error"]
            try:
                outcome = await _attempt(rt, row, now)
            except Exception:
                # One broken record must not stop everyone else's retry; its lease keeps this
                # pass from retrying it in a loop, and a later pass tries again.
                log.exception("dunning: retry of order %s failed", row.order_id)
                outcome = "error"
            _count(result, outcome)


async def retry_with_new_default(rt: Runtime, tenant_id: str, customer_id: str) -> None:
    """Retry the customer's open dunning records at once with its default card, unless their
    last attempt used that card. On failure the anchored schedule goes on."""
    customer = await rt.customers.get(tenant_id, customer_id)
    card = customer.default_payment_method_id
    if card is None:
        return
    async with rt.uow() as uow:
        rows = await repo.open_dunning_of_customer(uow, tenant_id, customer_id, not_tried_with=card)
    for row in rows:
        wall_now = rt.clock.now()
        async with rt.uow() as uow:
            claimed = await repo.claim_dunning_for_new_card(
                uow, tenant_id, row.order_id, card, wall_now=wall_now, lease_until=wall_now + LEASE
            )
            await uow.commit()
        if not claimed:
            continue  # retried with this card already, or being retried right now
        try:
            await _attempt(rt, row, await _clock_now(rt, tenant_id, row.test_clock_id))
        except Exception:
            # The scheduled retry still comes once the lease runs out.
            log.exception("dunning: retry of order %s with a new card failed", row.order_id)


async def next_retry_due(
    rt: Runtime, tenant_id: str, test_clock_id: str | None, until: datetime
) -> datetime | None:
    """When the earliest retry due by `until` on the clock falls, if one does."""
    async with rt.uow() as uow:
        return await repo.next_dunning_due(
            uow,
            tenant_id=tenant_id,
            test_clock_id=test_clock_id,
            until=until,
            wall_now=rt.clock.now(),
        )
