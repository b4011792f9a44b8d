"""Coupons: discounts of the catalog, applied to a subscription or to a one-off order.

A coupon takes `percent_off`, or `amount_off` in one currency, off an order's subtotal. Its
`duration` says which orders of a subscription it discounts, as Stripe's does: `once` the first,
`repeating` those whose period starts within `duration_in_months` months of the coupon being
applied, `forever` all of them. `redeem_by` and `max_redemptions` limit applying it; an applied
coupon keeps discounting for its duration whatever happens to them later.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from recur.kit.clock import ensure_utc
from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.money import CurrencyError, normalize_currency
from recur.kit.pagination import Page, to_page
from recur.orders.schemas import DiscountTerms
from recur.subscriptions import repository as repo
from recur.subscriptions.periods import period_boundary
from recur.subscriptions.schemas import Coupon, CouponCreate, CouponDuration
from recur.subscriptions.tables import coupons

if TYPE_CHECKING:
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime


def decimal_text(value: Decimal) -> str:
    """The exact text a percentage is stored as: "20", "7.625"."""
    return format(value.normalize(), "f")


def _coupon_values(params: CouponCreate) -> dict[str, Any]:
    if params.percent_off is not None and params.amount_off is not None:
        raise InvalidRequest("give percent_off or amount_off, not both", param="amount_off")
    if params.percent_off is None and params.amount_off is None:
        raise InvalidRequest("give percent_off or amount_off", param="percent_off")
    currency = None
    if params.amount_off is not None:
        if params.currency is None:
            raise InvalidRequest("amount_off needs its currency", param="currency")
        try:
            currency = normalize_currency(params.currency)
        except CurrencyError as exc:
            raise InvalidRequest(f"unknown currency {params.currency!r}", param="currency") from exc
    elif params.currency is not None:
        raise InvalidRequest("currency goes with amount_off only", param="currency")
    if (params.duration == "repeating") != (params.duration_in_months is not None):
        raise InvalidRequest(
            "duration_in_months is required with a repeating duration, and only then",
            param="duration_in_months",
        )
    return {
        "name": params.name,
        "percent_off": None if params.percent_off is None else decimal_text(params.percent_off),
        "amount_off": params.amount_off,
        "currency": currency,
        "duration": params.duration,
        "duration_in_months": params.duration_in_months,
        "max_redemptions": params.max_redemptions,
        "redeem_by": None if params.redeem_by is None else ensure_utc(params.redeem_by),
        "metadata": params.metadata,
    }


async def create_coupon(rt: Runtime, tenant_id: str, params: CouponCreate) -> Coupon:
    """A coupon: exactly one of `percent_off` and `amount_off` (with its currency)."""
    values = _coupon_values(params)
    async with rt.uow() as uow:
        coupon_id = new_id("coupon")
        await repo.insert(
            uow,
            coupons,
            {
                **values,
                "id": coupon_id,
                "tenant_id": tenant_id,
                "times_redeemed": 0,
                "created": rt.clock.now(),
            },
        )
        coupon = repo.to_coupon(await repo.get_coupon(uow, tenant_id, coupon_id))
        await uow.commit()
    return coupon


async def _load(uow: UnitOfWork, tenant_id: str, coupon_id: str) -> Coupon:
    row = await repo.get_coupon(uow, tenant_id, coupon_id)
    if row is None:
        raise NotFound(f"no such coupon: {coupon_id}", param="coupon_id")
    return repo.to_coupon(row)


async def get_coupon(rt: Runtime, tenant_id: str, coupon_id: str) -> Coupon:
    """One coupon of the tenant."""
    async with rt.uow() as uow:
        return await _load(uow, tenant_id, coupon_id)


async def list_coupons(
    rt: Runtime, tenant_id: str, limit: int, starting_after: str | None
) -> Page[Coupon]:
    """The tenant's coupons, newest first."""
    async with rt.uow() as uow:
        rows, has_more = await repo.page(uow, coupons, tenant_id, limit, starting_after)
    return to_page(rows, has_more, repo.to_coupon)


def _used_up(coupon: Coupon) -> InvalidRequest:
    return InvalidRequest(
        f"the coupon has been redeemed {coupon.max_redemptions} times, its maximum",
        param="coupon_id",
        code="coupon_max_redemptions",
    )


def check_redeemable(coupon: Coupon, currency: str, at: datetime) -> None:
    """Refuse a coupon that cannot be applied at `at` to orders in `currency`."""
    if coupon.redeem_by is not None and at > coupon.redeem_by:
        raise InvalidRequest(
            f"the coupon could be redeemed until {coupon.redeem_by.isoformat()}",
            param="coupon_id",
            code="coupon_expired",
        )
    if coupon.max_redemptions is not None and coupon.times_redeemed >= coupon.max_redemptions:
        raise _used_up(coupon)
    if coupon.currency is not None and coupon.currency != currency:
        raise InvalidRequest(
            f"the coupon takes {coupon.currency} off, but this is billed in {currency}",
            param="coupon_id",
            code="currency_mismatch",
        )


async def check_coupon(
    rt: Runtime, tenant_id: str, coupon_id: str, currency: str, at: datetime
) -> Coupon:
    """The coupon, if it could be applied at `at` to orders in `currency` (nothing counted)."""
    coupon = await get_coupon(rt, tenant_id, coupon_id)
    check_redeemable(coupon, currency, at)
    return coupon


async def redeem(
    uow: UnitOfWork, tenant_id: str, coupon_id: str, currency: str, at: datetime, redeemed_by: str
) -> Coupon:
    """Apply the coupon to `redeemed_by` (a subscription or order id) in the caller's
    transaction: checked, and one use counted. Counted once however often it is asked."""
    coupon = await _load(uow, tenant_id, coupon_id)
    if await repo.redemption_exists(uow, tenant_id, coupon_id, redeemed_by):
        return coupon
    check_redeemable(coupon, currency, at)
    if not await repo.count_redemption(uow, tenant_id, coupon_id, redeemed_by, at):
        raise _used_up(coupon)  # another request took the last use since we read it
    return await _load(uow, tenant_id, coupon_id)


async def redeem_coupon(
    rt: Runtime, tenant_id: str, coupon_id: str, currency: str, at: datetime, redeemed_by: str
) -> Coupon:
    """Apply the coupon to `redeemed_by` (a one-off order): checked and counted."""
    async with rt.uow() as uow:
        coupon = await redeem(uow, tenant_id, coupon_id, currency, at, redeemed_by)
        await uow.commit()
    return coupon


async def release_coupon(rt: Runtime, tenant_id: str, coupon_id: str, redeemed_by: str) -> None:
    """Give back the use counted for `redeemed_by`, whose order was never made."""
    async with rt.uow() as uow:
        await repo.uncount_redemption(uow, tenant_id, coupon_id, redeemed_by)
        await uow.commit()


def discount_applies(
    duration: CouponDuration,
    duration_in_months: int | None,
    discount_start: datetime,
    period_start: datetime,
    first_order: bool,
) -> bool:
    """Whether a coupon applied at `discount_start` discounts the order of the period starting
    at `period_start` (`first_order`: the subscription has no order yet)."""
    if duration == "forever":
        return True
    if duration == "once":
        return first_order
    assert duration_in_months is not None
    try:
        end = period_boundary(discount_start, "month", duration_in_months, 1)
    except OverflowError:
        return True  # ends after year 9999
    return period_start < end


def discount_terms(coupon: Coupon) -> DiscountTerms:
    """What orders need of a coupon to take it off a subtotal."""
    return DiscountTerms(
        coupon_id=coupon.id,
        name=coupon.name,
        percent_off=coupon.percent_off,
        amount_off=coupon.amount_off,
    )


async def period_discount(
    uow: UnitOfWork, subscription: Any, period_start: datetime
) -> DiscountTerms | None:
    """The discount of the subscription's coupon on the order of the period from
    `period_start`, or None when it has no coupon or the coupon's duration is over."""
    if subscription.coupon_id is None:
        return None
    coupon = await _load(uow, subscription.tenant_id, subscription.coupon_id)
    applies = discount_applies(
        coupon.duration,
        coupon.duration_in_months,
        subscription.discount_start,
        period_start,
        first_order=subscription.latest_order_id is None,
    )
    return discount_terms(coupon) if applies else None
