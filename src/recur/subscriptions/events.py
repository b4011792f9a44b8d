"""What the Subscription Manager learns from other services' events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from recur.kit.db import fetch_by_ids
from recur.kit.events import Event, EventBus
from recur.payments.schemas import DunningExhausted
from recur.subscriptions import billing
from recur.subscriptions import changes as plan_changes
from recur.subscriptions import repository as repo
from recur.subscriptions.periods import period_boundary
from recur.subscriptions.tables import OUTBOX, inbox, subscriptions

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime

log = logging.getLogger("recur.subscriptions")


def subscribe(bus: EventBus, rt: Runtime) -> None:
    async def renew_again(uow: UnitOfWork, row: Any) -> dict[str, Any]:
        """When a subscription left `unpaid` renews, now that its order is paid: at the end of
        its period, or, when that has passed, with a new period from now, charged at once (as
        `resume` does). The periods it spent unpaid are not billed: it renewed no more then."""
        if row.test_clock_id is None:
            now = rt.clock.now()
        else:
            now = (await repo.get_test_clock(uow, row.tenant_id, row.test_clock_id)).frozen_time
        if row.current_period_end > now or row.cancel_at_period_end:
            # The bill run renews it then, or ends it if it was set to cancel at period end.
            return {"next_action_at": row.current_period_end}
        plan = await repo.get_plan(uow, row.tenant_id, row.plan_id)
        return {
            "billing_cycle_anchor": now,
            "pending_period_start": now,
            "pending_period_end": period_boundary(now, plan.interval, plan.interval_count, 1),
            "next_action_at": now,
        }

    async def order_paid(uow: UnitOfWork, event: Event) -> None:
        """A subscription whose current period's order is paid late (a retry, a new card, a
        payment by hand) becomes active again, and one left `unpaid` renews again."""
        order = event.payload
        if not order.get("subscription_id"):
            return
        row = await repo.get_subscription(
            uow, event.tenant_id, order["subscription_id"], for_update=True
        )
        if row is None or row.status not in ("incomplete", "past_due", "unpaid"):
            return
        if row.latest_order_id != order["id"]:
            return  # an older period's order: the current one is still unpaid
        values: dict[str, Any] = {"status": "active", "updated": rt.clock.now()}
        if row.status == "unpaid":
            values.update(await renew_again(uow, row))
        if "pending_period_start" in values:
            # A new period, as the bill run begins one: the change scheduled for the period's
            # end applies, and the prorations not billed yet go on its order.
            values.update(plan_changes.next_period_values(row))
        await repo.update(uow, subscriptions, event.tenant_id, row.id, values)
        if "pending_period_start" in values:
            await plan_changes.claim_items_for_periods(
                uow,
                [plan_changes.PeriodKey(event.tenant_id, row.id, values["pending_period_start"])],
            )
        updated = await repo.get_subscription(uow, event.tenant_id, row.id)
        await OUTBOX.record(
            uow,
            event.tenant_id,
            "subscription.updated",
            repo.to_subscription(updated).model_dump(mode="json"),
            rt.clock.now(),
        )
        if "pending_period_start" in values:

            async def start_period() -> None:
                try:
                    await billing.advance_subscription(
                        rt, event.tenant_id, row.id, values["pending_period_start"]
                    )
                except Exception:
                    # The period is pending and due: the next bill run orders and charges it.
                    log.exception("subscription %s: new period after unpaid failed", row.id)

            # Ordering and charging call other services: never inside this transaction.
            uow.after_commit(start_period)

    async def dunning_exhausted(uow: UnitOfWork, event: Event) -> None:
        """The last retry of an order's charge failed. A subscription still past due ends
        (`cancel`) or stays, renewing no more (`unpaid`), as the tenant chose."""
        exhausted = DunningExhausted.model_validate(event.payload)
        row = await repo.get_subscription(
            uow, event.tenant_id, exhausted.subscription_id, for_update=True
        )
        # Past due, whichever of its orders ran out of retries: with periods shorter than the
        # retry schedule, a newer order is the latest by then, and it is unpaid too. Paid
        # since (active), paused or ended: nothing to do.
        if row is None or row.status != "past_due":
            return
        if row.pending_period_start is not None:
            return  # a renewal is under way; its charge decides, and its own dunning
        values: dict[str, Any] = {"next_action_at": None, "updated": rt.clock.now()}
        if exhausted.final_action == "cancel":
            at = exhausted.exhausted_at
            values.update(status="canceled", canceled_at=at, ended_at=at, claimed_until=None)
            event_type = "subscription.canceled"
            # Ended for not paying: its prorations not billed yet are dropped with it, as a
            # cancel without proration drops them (they would be billed to no one's benefit).
            await plan_changes.drop_unbilled_items(uow, row)
        else:
            values.update(status="unpaid")
            event_type = "subscription.updated"
        await repo.update(uow, subscriptions, event.tenant_id, row.id, values)
        updated = await repo.get_subscription(uow, event.tenant_id, row.id)
        payload = repo.to_subscription(updated).model_dump(mode="json")
        if event_type == "subscription.canceled":
            # Why it ended (Stripe's `cancellation_details.reason`): payments lets the other
            # unpaid orders of a subscription dunning ended run out their own retries.
            payload["cancellation_reason"] = "payment_failed"
        await OUTBOX.record(uow, event.tenant_id, event_type, payload, rt.clock.now())

    async def orders_paid(uow: UnitOfWork, events: list[Event]) -> None:
        """The bill run's orders are paid by the thousand, of subscriptions already active:
        one query finds the few that are waiting for their order."""
        waiting: set[tuple[str, str]] = set()
        for tenant_id in {event.tenant_id for event in events}:
            ids = {
                e.payload["subscription_id"]
                for e in events
                if e.tenant_id == tenant_id and e.payload.get("subscription_id")
            }
            if ids:
                rows = await fetch_by_ids(
                    uow,
                    subscriptions,
                    tenant_id,
                    ids,
                    subscriptions.c.status.in_(("incomplete", "past_due", "unpaid")),
                )
                waiting.update((tenant_id, row.id) for row in rows)
        for event in events:
            if (event.tenant_id, event.payload.get("subscription_id")) in waiting:
                await order_paid(uow, event)

    bus.subscribe("order.paid", "subscriptions", inbox, order_paid, batch_handler=orders_paid)
    bus.subscribe("dunning.exhausted", "subscriptions", inbox, dunning_exhausted)
