"""What a plan or quantity change would make: its checks, and its prorations. Read-only.

The credit is for what was paid for the unused time of the current price, before tax: the
period order's share for the subscription's own lines, as far as that order was settled, after
its discount (unless the order the credit lands on takes the same percentage off again), or,
after an earlier change in the period, what that change charged. The charge is the new price
for the rest of the period. Both are prorated to the microsecond and rounded once
(`proration.prorate_change`). A cancel or a resume credits unused time on the same basis
(`unused_time_line`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.money import MAX_MINOR
from recur.orders.schemas import DiscountTerms
from recur.subscriptions import coupons
from recur.subscriptions import repository as repo
from recur.subscriptions.pricing import describe_interval, period_amount, terms_from_plan
from recur.subscriptions.proration import (
    PeriodOrder,
    paid_basis,
    prorate_change,
    round_exact,
    unused_share,
)
from recur.subscriptions.schemas import ChangePreviewLine, SubscriptionChange
from recur.subscriptions.test_clocks import clock_now

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime


async def percent_discount(uow: UnitOfWork, row: Any, at: datetime) -> DiscountTerms | None:
    """The subscription's percentage coupon, if it discounts the order of a period starting at
    `at`. Amount-off coupons come off each period's order once and never off prorations."""
    terms = await coupons.period_discount(uow, row, at)
    return terms if terms is not None and terms.percent_off is not None else None


@dataclass(frozen=True)
class ChangeRequest:
    """A change of one subscription, checked against the subscription as it was read."""

    row: Any
    plan: Any  # the new plan (the current one when only the quantity changes), with its product
    quantity: int
    at: datetime  # now, in the subscription's time


@dataclass(frozen=True)
class Quote:
    """The lines a change makes, and the proration basis it leaves on the subscription."""

    lines: list[ChangePreviewLine]
    basis: int | None  # the subscription's proration basis once the change is made
    basis_from: datetime | None


async def check_change(
    rt: Runtime, tenant_id: str, subscription_id: str, params: SubscriptionChange
) -> ChangeRequest:
    """The change, checked: NotFound for another tenant's subscription or plan, InvalidRequest
    (with `param`) for a change that cannot be made, Conflict for a subscription whose state
    forbids it. Nothing is written."""
    if params.plan_id is None and params.quantity is None:
        raise InvalidRequest("give plan_id, quantity or both", param="plan_id")
    async with rt.uow() as uow:
        row = await repo.get_subscription(uow, tenant_id, subscription_id)
        if row is None:
            raise NotFound(f"no such subscription: {subscription_id}", param="subscription_id")
        current = await repo.get_plan(uow, tenant_id, row.plan_id)
        plan_id = row.plan_id if params.plan_id is None else params.plan_id
        plan = await repo.plan_with_product(uow, tenant_id, plan_id)
    if plan is None:
        raise NotFound(f"no such plan: {params.plan_id}", param="plan_id")
    if row.status in ("canceled", "incomplete", "paused"):
        raise Conflict(f"a {row.status} subscription cannot be changed")
    quantity = row.quantity if params.quantity is None else params.quantity
    if plan.id != row.plan_id:
        if not plan.active:
            raise InvalidRequest("the plan is not active", param="plan_id")
        if plan.currency != row.currency:
            raise InvalidRequest(
                f"the plan is in {plan.currency} but the subscription is billed in {row.currency}",
                param="plan_id",
                code="currency_mismatch",
            )
        cycle = (plan.interval, plan.interval_count)
        current_cycle = (current.interval, current.interval_count)
        # A trial has no paid period to keep in step with: a change now may switch interval
        # (the first period is billed on the new plan); one at its end may not.
        in_trial_now = row.status == "trialing" and params.effective == "immediately"
        if not in_trial_now and cycle != current_cycle:
            new, old = describe_interval(*cycle), describe_interval(*current_cycle)
            raise InvalidRequest(
                f"the plan bills {new} and the subscription {old}: a change of billing "
                "interval is not supported; start a new subscription for it",
                param="plan_id",
            )
    if (plan.id, quantity) == (row.plan_id, row.quantity):
        raise InvalidRequest(
            "the subscription has this plan and quantity already",
            param="plan_id" if params.plan_id is not None else "quantity",
        )
    if period_amount(terms_from_plan(plan), quantity) > MAX_MINOR:
        raise InvalidRequest("a period at this quantity costs too much", param="quantity")
    at = await clock_now(rt, tenant_id, row.test_clock_id)
    if row.pending_period_start is not None or (
        row.next_action_at is not None and row.next_action_at <= at
    ):
        raise Conflict("the subscription's renewal is under way; try again in a moment")
    if params.effective == "period_end" and row.cancel_at_period_end:
        raise Conflict("the subscription is set to cancel at period end")
    return ChangeRequest(row, plan, quantity, at)


def _describe(what: str, plan: Any, quantity: int, at: datetime) -> str:
    name = terms_from_plan(plan, plan.product_name).name
    units = name if quantity == 1 else f"{quantity} x {name}"
    return f"{what} {units} after {at:%Y-%m-%d %H:%M} UTC"


async def _paid_basis(
    rt: Runtime, row: Any, price: int, *, discounted_again: bool
) -> tuple[Fraction, datetime]:
    """What was paid (before tax) for the current price, and from when to the period's end."""
    start = row.current_period_start
    if row.proration_basis is not None and row.proration_basis_from >= start:
        return Fraction(row.proration_basis), row.proration_basis_from
    if row.latest_order_id is None:
        return Fraction(0), start
    order = await rt.orders.get(row.tenant_id, row.latest_order_id)
    if order.period_start != start or order.status == "void":
        return Fraction(0), start
    paid = PeriodOrder(
        subtotal=order.subtotal,
        discount=order.discount.amount if order.discount is not None else 0,
        total=order.total,
        settled=order.amount_paid + order.credit_applied,
    )
    return paid_basis(price, paid, discounted_again=discounted_again), start


@dataclass(frozen=True)
class PaidBasis:
    """What was paid, before tax, for the subscription's current plan and quantity from
    `start` to the end of its period, exactly."""

    plan: Any  # the current plan, with its product
    amount: Fraction
    start: datetime


async def paid_for_current_price(rt: Runtime, row: Any, *, landing: datetime) -> PaidBasis:
    """The basis a credit for unused time is prorated from. `landing` is the start of the
    order the credit lands on (or is counted for): when that order takes the subscription's
    percentage off it again, the basis is taken before the discount."""
    async with rt.uow() as uow:
        current = await repo.plan_with_product(uow, row.tenant_id, row.plan_id)
        discounted_again = await percent_discount(uow, row, landing) is not None
    price = period_amount(terms_from_plan(current), row.quantity)
    amount, start = await _paid_basis(rt, row, price, discounted_again=discounted_again)
    return PaidBasis(current, amount, start)


def _credit_line(row: Any, plan: Any, amount: int, at: datetime) -> ChangePreviewLine:
    return ChangePreviewLine(
        description=_describe("Unused time on", plan, row.quantity, at),
        amount=amount,
        period_start=at,
        period_end=row.current_period_end,
    )


async def unused_time_line(
    rt: Runtime, row: Any, at: datetime, *, landing: datetime
) -> ChangePreviewLine | None:
    """The credit (a negative line, before tax) for what was paid for the subscription's
    current plan and quantity for the time after `at`: the credit a change at `at` would
    make, on the same basis (`paid_for_current_price`, `landing` as there). None when there is
    nothing to credit: a trial, an unpaid period, no time left."""
    if row.status == "trialing" or at >= row.current_period_end:
        return None
    basis = await paid_for_current_price(rt, row, landing=landing)
    credit = unused_share(basis.amount, basis.start, row.current_period_end, at)
    return _credit_line(row, basis.plan, -credit, at) if credit else None


async def quote_change(rt: Runtime, change: ChangeRequest, params: SubscriptionChange) -> Quote:
    """The prorations of the change, and the proration basis it leaves."""
    row, at = change.row, change.at
    unchanged = Quote([], row.proration_basis, row.proration_basis_from)
    # In a trial nothing was paid and nothing is prorated; past the period's end (a
    # subscription left unpaid) no time is left to prorate.
    if params.effective == "period_end" or row.status == "trialing":
        return unchanged
    if at >= row.current_period_end:
        return unchanged
    # Items land on the next renewal, or on an order now: if that order takes the
    # subscription's percentage off them, the credit is taken before that discount.
    landing = row.current_period_end if params.proration_behavior == "create_prorations" else at
    basis = await paid_for_current_price(rt, row, landing=landing)
    if params.proration_behavior == "none":
        # What was paid still stands for the time left: a later change credits it.
        return Quote([], round_exact(basis.amount), basis.start)
    new_price = period_amount(terms_from_plan(change.plan), change.quantity)
    proration = prorate_change(
        basis.amount, basis.start, new_price, row.current_period_start, row.current_period_end, at
    )
    lines = []
    if proration.credit:
        lines.append(_credit_line(row, basis.plan, proration.credit, at))
    if proration.charge:
        description = _describe("Remaining time on", change.plan, change.quantity, at)
        lines.append(
            ChangePreviewLine(
                description=description,
                amount=proration.charge,
                period_start=at,
                period_end=row.current_period_end,
            )
        )
    return Quote(lines, proration.charge, at)
