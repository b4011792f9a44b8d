"""Subscription Manager: subscriptions and their lifecycle."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.pagination import Page, to_page
from recur.subscriptions import billing, coupons
from recur.subscriptions import repository as repo
from recur.subscriptions.periods import period_boundary, trial_end
from recur.subscriptions.pricing import period_amount, terms_from_plan
from recur.subscriptions.schemas import Subscription, SubscriptionCreate
from recur.subscriptions.tables import OUTBOX, subscriptions
from recur.subscriptions.test_clocks import clock_now

if TYPE_CHECKING:
    from recur.runtime import Runtime


MAX_AMOUNT = 2**63 - 1


async def create_subscription(
    rt: Runtime, tenant_id: str, params: SubscriptionCreate, request_key: str | None = None
) -> Subscription:
    """Start a subscription now (in its customer's time).

    Without a trial the first period is ordered and charged at once: `active` when paid,
    `incomplete` when not. With a trial it is `trialing`, first charged when the trial ends.
    A `coupon_id` is checked as of the customer's time and its use counted with the subscription.
    `request_key` is the request's Idempotency-Key: the request carried out again (its first
    process died) finishes the subscription it started instead of starting a second one.
    """
    if request_key is not None:
        async with rt.uow() as uow:
            started = await uow.fetch_one(
                sa.select(subscriptions.c.id, subscriptions.c.pending_period_start).where(
                    subscriptions.c.tenant_id == tenant_id,
                    subscriptions.c.request_key == request_key,
                )
            )
        if started is not None:
            if started.pending_period_start is not None:
                # Its first period is ordered and charged idempotently: this finishes it.
                await billing.advance_subscription(
                    rt, tenant_id, started.id, started.pending_period_start
                )
            return await get_subscription(rt, tenant_id, started.id)
    customer = await rt.customers.get(tenant_id, params.customer_id)
    async with rt.uow() as uow:
        plan = await repo.get_plan(uow, tenant_id, params.plan_id)
    if plan is None:
        raise NotFound(f"no such plan: {params.plan_id}", param="plan_id")
    if not plan.active:
        raise InvalidRequest("the plan is not active", param="plan_id")
    if customer.currency is not None and customer.currency != plan.currency:
        raise InvalidRequest(
            f"the plan is in {plan.currency} but the customer is billed in {customer.currency}",
            param="plan_id",
            code="currency_mismatch",
        )
    if period_amount(terms_from_plan(plan), params.quantity) > MAX_AMOUNT:
        raise InvalidRequest("a period at this quantity costs too much", param="quantity")
    now = await clock_now(rt, tenant_id, customer.test_clock_id)
    if params.coupon_id is not None:
        # Refused before anything changes; its use is counted below, with the subscription.
        await coupons.check_coupon(rt, tenant_id, params.coupon_id, plan.currency, now)
    await rt.customers.adopt_currency(tenant_id, customer.id, plan.currency)

    trial_days = plan.trial_days if params.trial_days is None else params.trial_days
    subscription_id = new_id("sub")
    values = {
        "id": subscription_id,
        "request_key": request_key,
        "tenant_id": tenant_id,
        "customer_id": customer.id,
        "plan_id": plan.id,
        "quantity": params.quantity,
        "currency": plan.currency,
        "cancel_at_period_end": False,
        "test_clock_id": customer.test_clock_id,
        "metadata": params.metadata,
        "coupon_id": params.coupon_id,
        "discount_start": now if params.coupon_id is not None else None,
        "created": now,
        "updated": rt.clock.now(),
    }
    if trial_days > 0:
        end = trial_end(now, trial_days)
        values.update(
            status="trialing",
            billing_cycle_anchor=end,
            period_index=0,
            current_period_start=now,
            current_period_end=end,
            trial_start=now,
            trial_end=end,
            next_action_at=end,
        )
    else:
        end = period_boundary(now, plan.interval, plan.interval_count, 1)
        # The first period is pending until it is charged; due now, so that if this request
        # dies before the charge, the next bill run finishes it.
        values.update(
            status="incomplete",
            billing_cycle_anchor=now,
            period_index=0,
            current_period_start=now,
            current_period_end=end,
            pending_period_start=now,
            pending_period_end=end,
            next_action_at=now,
            claimed_until=rt.clock.now() + billing.LEASE,
        )
    async with rt.uow() as uow:
        if params.coupon_id is not None:
            await coupons.redeem(
                uow, tenant_id, params.coupon_id, plan.currency, now, subscription_id
            )
        await repo.insert(uow, subscriptions, values)
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
        await OUTBOX.record(
            uow,
            tenant_id,
            "subscription.created",
            repo.to_subscription(row).model_dump(mode="json"),
            rt.clock.now(),
        )
        await uow.commit()
    if trial_days == 0:
        await billing.advance_subscription(rt, tenant_id, subscription_id, now)
    return await get_subscription(rt, tenant_id, subscription_id)


async def get_subscription(rt: Runtime, tenant_id: str, subscription_id: str) -> Subscription:
    """One subscription of the tenant."""
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
    if row is None:
        raise NotFound(f"no such subscription: {subscription_id}", param="subscription_id")
    return repo.to_subscription(row)


async def list_subscriptions(
    rt: Runtime,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    customer_id: str | None = None,
    status: str | None = None,
) -> Page[Subscription]:
    """The tenant's subscriptions, newest first."""
    async with rt.uow() as uow:
        rows, has_more = await repo.page(
            uow,
            subscriptions,
            tenant_id,
            limit,
            starting_after,
            customer_id=customer_id,
            status=status,
        )
    return to_page(rows, has_more, repo.to_subscription)
