"""Order Processing Service: orders, their gapless numbers, their lifecycle and payments."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from recur.kit import ledger
from recur.kit.clock import ensure_utc
from recur.kit.errors import Conflict, InvalidRequest, NotFound
from recur.kit.events import Outbox
from recur.kit.ids import new_id
from recur.kit.money import CurrencyError, normalize_currency
from recur.kit.pagination import Page
from recur.orders import invoice
from recur.orders import repository as repo
from recur.orders.schemas import (
    DiscountTerms,
    LineKind,
    Order,
    OrderCreate,
    OrderStatus,
    OrderTaxRate,
)
from recur.orders.tables import ledger as order_ledger
from recur.orders.tables import outbox
from recur.orders.totals import DiscountInput, LineInput, TaxRateInput, Totals, compute_totals

if TYPE_CHECKING:
    from recur.customers.schemas import Customer
    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime

log = logging.getLogger("recur.orders")

OUTBOX = Outbox("orders", outbox)


def check_currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except CurrencyError as exc:
        raise InvalidRequest(f"unknown currency {code!r}", param="currency") from exc


async def _load(
    uow: UnitOfWork, tenant_id: str, order_id: str, *, for_update: bool = False
) -> Order:
    row = await repo.get(uow, tenant_id, order_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no such order: {order_id}", param="order_id")
    lines = await repo.lines_of(uow, tenant_id, [order_id])
    return repo.to_order(row, lines[order_id])


async def _record(
    uow: UnitOfWork, tenant_id: str, event_type: str, order: Order, at: datetime
) -> None:
    await OUTBOX.record(uow, tenant_id, event_type, order.model_dump(mode="json"), at)


def line_rows(
    tenant_id: str,
    order_id: str,
    currency: str,
    kind: LineKind,
    lines: Sequence[Any],
    totals: Totals,
    default_period: tuple[datetime | None, datetime | None] = (None, None),
) -> list[dict[str, Any]]:
    rows = []
    for position, (line, amount) in enumerate(zip(lines, totals.line_amounts, strict=True)):
        start = getattr(line, "period_start", None) or default_period[0]
        end = getattr(line, "period_end", None) or default_period[1]
        rows.append(
            {
                "id": new_id("ol"),
                "tenant_id": tenant_id,
                "order_id": order_id,
                "position": position,
                "kind": kind,
                "description": line.description,
                "quantity": line.quantity,
                "unit_amount": line.unit_amount,
                "amount": amount,
                "currency": currency,
                "period_start": ensure_utc(start) if start else None,
                "period_end": ensure_utc(end) if end else None,
            }
        )
    return rows


def order_totals(
    lines: Sequence[Any], discount: DiscountTerms | None, rates: Sequence[OrderTaxRate]
) -> Totals:
    return compute_totals(
        [LineInput(line.unit_amount, line.quantity) for line in lines],
        None if discount is None else DiscountInput(discount.percent_off, discount.amount_off),
        [TaxRateInput(rate.percentage, rate.inclusive) for rate in rates],
    )


def adjustment_values(
    totals: Totals, discount: DiscountTerms | None, rates: Sequence[OrderTaxRate]
) -> dict[str, Any]:
    """The order's discount and tax columns."""
    return {
        "discount_amount": totals.discount,
        "coupon_id": None if discount is None else discount.coupon_id,
        "coupon_name": None if discount is None else discount.name,
        "tax": totals.tax,
        "tax_amounts": [
            {
                "tax_rate_id": rate.tax_rate_id,
                "display_name": rate.display_name,
                "percentage": str(rate.percentage),  # text: exact, as the catalog keeps it
                "inclusive": rate.inclusive,
                "amount": amount,
            }
            for rate, amount in zip(rates, totals.tax_amounts, strict=True)
        ],
    }


async def _customer_tax_rates(
    rt: Runtime, tenant_id: str, customer: Customer
) -> list[OrderTaxRate]:
    rates = await rt.subscriptions.get_tax_rates(tenant_id, customer.tax_rate_ids)
    return [
        OrderTaxRate(
            tax_rate_id=rate.id,
            display_name=rate.display_name,
            percentage=rate.percentage,
            inclusive=rate.inclusive,
        )
        for rate in rates
    ]


async def _redeem_coupon(
    rt: Runtime, tenant_id: str, customer: Customer, coupon_id: str, currency: str, order_id: str
) -> DiscountTerms:
    """Apply the coupon to the order as of the customer's time (its test clock's, if any)."""
    at = rt.clock.now()
    if customer.test_clock_id is not None:
        at = (await rt.subscriptions.get_test_clock(tenant_id, customer.test_clock_id)).frozen_time
    coupon = await rt.subscriptions.redeem_coupon(tenant_id, coupon_id, currency, at, order_id)
    return DiscountTerms(
        coupon_id=coupon.id,
        name=coupon.name,
        percent_off=coupon.percent_off,
        amount_off=coupon.amount_off,
    )


async def _post(
    uow: UnitOfWork,
    tenant_id: str,
    order: Order,
    kind: str,
    lines: list[ledger.Line],
    now: datetime,
) -> None:
    """The order's side of a money movement, in the same transaction as the movement."""
    await ledger.post(
        uow,
        order_ledger,
        tenant_id=tenant_id,
        kind=kind,
        source_id=order.id,
        customer_id=order.customer_id,
        currency=order.currency,
        lines=lines,
        at=now,
    )


def finalized_entry(tenant_id: str, order: Order) -> ledger.Entry:
    """Finalized, the order is owed: revenue net of discount, and the tax collected for others."""
    return ledger.Entry(
        tenant_id,
        "order_finalized",
        order.id,
        order.customer_id,
        order.currency,
        [
            ledger.Line("accounts_receivable", debit=order.total),
            ledger.Line("revenue", credit=order.total - order.tax),
            ledger.Line("tax_payable", credit=order.tax),
        ],
    )


def payment_applied_entry(
    tenant_id: str, order: Order, received: int, settles: str = "accounts_receivable"
) -> ledger.Entry:
    """A payment settles what the order is owed (on a written-off order, it recovers bad debt)."""
    return ledger.Entry(
        tenant_id,
        "payment_applied",
        order.id,
        order.customer_id,
        order.currency,
        [ledger.Line("payments_clearing", debit=received), ledger.Line(settles, credit=received)],
    )


async def _finalize(uow: UnitOfWork, tenant_id: str, order_id: str, now: datetime) -> Order:
    """Number a locked draft and open it; one with nothing due is paid at once, as Stripe does."""
    row = await repo.get(uow, tenant_id, order_id)
    assert row is not None and row.status == "draft"
    # Taken inside this transaction: the counter row stays locked until commit and a
    # rollback gives the number back, so numbers stay gapless.
    values: dict[str, Any] = {
        "number": await repo.next_order_number(uow, tenant_id),
        "status": "open",
        "finalized_at": now,
        "updated": now,
    }
    if repo.amount_due("open", row.total, row.amount_paid) == 0:
        values.update(status="paid", paid_at=now)
    await repo.update(uow, tenant_id, order_id, values)
    order = await _load(uow, tenant_id, order_id)
    await ledger.post_many(uow, order_ledger, [finalized_entry(tenant_id, order)], now)
    # Both events carry the order as it is now, so a late redelivery of the first cannot
    # show a paid order as open in a read model.
    await _record(uow, tenant_id, "order.finalized", order, now)
    if order.status == "paid":
        await _record(uow, tenant_id, "order.paid", order, now)
    return order


async def apply_customer_credit(rt: Runtime, tenant_id: str, order: Order) -> Order:
    """Pay what an open order owes from the customer's credit balance, before any charge.

    Runs after the order is committed, so a crash in between leaves an open order without
    credit; every path that hands out an order calls this again, and the customers service
    spends credit once per order, so it is never spent twice.
    """
    if order.status != "open" or order.amount_due == 0 or order.credit_applied:
        return order
    applied = await rt.customers.apply_credit(
        tenant_id, order.customer_id, order.id, order.currency, order.amount_due
    )
    if applied == 0:
        return order
    return await record_credit_applied(rt, tenant_id, order, applied)


async def record_credit_applied(rt: Runtime, tenant_id: str, order: Order, applied: int) -> Order:
    """The orders side of credit the customers service spent on an order (once per order)."""
    now = rt.clock.now()
    async with rt.uow() as uow:
        row = await repo.get(uow, tenant_id, order.id, for_update=True)
        assert row is not None
        if row.credit_applied:
            return await _load(uow, tenant_id, order.id)
        if row.status != "open":
            # Voided or paid another way while the credit was being spent: it goes back to the
            # customer (a void's `order.voided` gives it back too; it is given back once).
            customer_id, order_id = row.customer_id, row.id
            uow.after_commit(lambda: rt.customers.unapply_credit(tenant_id, customer_id, order_id))
            order = await _load(uow, tenant_id, order.id)
            await uow.commit()
            return order
        values: dict[str, Any] = {"credit_applied": applied, "updated": now}
        paid = row.amount_paid + applied >= row.total
        if paid:
            values.update(status="paid", paid_at=now)
        await repo.update(uow, tenant_id, order.id, values)
        order = await _load(uow, tenant_id, order.id)
        await _post(
            uow,
            tenant_id,
            order,
            "credit_applied",
            [
                ledger.Line("customer_credit_applied", debit=applied),
                ledger.Line("accounts_receivable", credit=applied),
            ],
            now,
        )
        if paid:
            await _record(uow, tenant_id, "order.paid", order, now)
        await uow.commit()
    return order


async def create_order(rt: Runtime, tenant_id: str, params: OrderCreate) -> Order:
    """Create a one-off order for a customer; finalized (numbered) at once unless asked not to.

    The currency defaults to the customer's; a customer without one adopts the order's.
    The customer's tax rates apply, and `coupon_id`'s discount (one use of it is counted).
    """
    try:
        customer = await rt.customers.get(tenant_id, params.customer_id)
    except NotFound as exc:
        raise NotFound(f"no such customer: {params.customer_id}", param="customer_id") from exc
    if params.currency is not None:
        currency = check_currency(params.currency)
    elif customer.currency is not None:
        currency = customer.currency
    else:
        raise InvalidRequest(
            "the customer has no currency yet: give the order's currency", param="currency"
        )
    rates = await _customer_tax_rates(rt, tenant_id, customer)
    # Checked before a coupon is redeemed: a discount only ever lowers the totals.
    totals = order_totals(params.lines, None, rates)
    order_id = new_id("ord")
    discount = None
    if params.coupon_id is not None:
        discount = await _redeem_coupon(
            rt, tenant_id, customer, params.coupon_id, currency, order_id
        )
        totals = order_totals(params.lines, discount, rates)
    try:
        if customer.currency != currency:
            # Before our own transaction: the customers service commits in its own.
            await rt.customers.adopt_currency(tenant_id, customer.id, currency)
        now = rt.clock.now()
        async with rt.uow() as uow:
            await repo.insert(
                uow,
                {
                    "id": order_id,
                    "tenant_id": tenant_id,
                    "customer_id": customer.id,
                    "subscription_id": None,
                    "number": None,
                    "status": "draft",
                    "currency": currency,
                    "subtotal": totals.subtotal,
                    **adjustment_values(totals, discount, rates),
                    "total": totals.total,
                    "amount_paid": 0,
                    "period_start": None,
                    "period_end": None,
                    "description": params.description,
                    "created": now,
                    "updated": now,
                },
            )
            await repo.insert_lines(
                uow, line_rows(tenant_id, order_id, currency, "one_off", params.lines, totals)
            )
            if params.auto_finalize:
                order = await _finalize(uow, tenant_id, order_id, now)
            else:
                order = await _load(uow, tenant_id, order_id)
            await uow.commit()
    except Exception:
        if discount is not None:
            # The coupon's use was counted for an order that was never made: give it back.
            await rt.subscriptions.release_coupon(tenant_id, discount.coupon_id, order_id)
        raise
    return await apply_customer_credit(rt, tenant_id, order)


async def get_order(rt: Runtime, tenant_id: str, order_id: str) -> Order:
    """One order of the tenant; NotFound for any other id."""
    async with rt.uow() as uow:
        return await _load(uow, tenant_id, order_id)


async def list_orders(
    rt: Runtime,
    tenant_id: str,
    limit: int,
    starting_after: str | None,
    customer_id: str | None = None,
    subscription_id: str | None = None,
    status: OrderStatus | None = None,
) -> Page[Order]:
    """The tenant's orders, newest first, optionally of one customer, subscription or status."""
    async with rt.uow() as uow:
        rows, has_more = await repo.page(
            uow,
            tenant_id,
            limit,
            starting_after,
            customer_id=customer_id,
            subscription_id=subscription_id,
            status=status,
        )
        lines = await repo.lines_of(uow, tenant_id, [row.id for row in rows])
    return Page[Order](data=[repo.to_order(row, lines[row.id]) for row in rows], has_more=has_more)


async def finalize_order(rt: Runtime, tenant_id: str, order_id: str) -> Order:
    """Give a draft its number and open it for payment; Conflict unless it is a draft."""
    async with rt.uow() as uow:
        order = await _load(uow, tenant_id, order_id, for_update=True)
        if order.status != "draft":
            raise Conflict(f"only a draft can be finalized; this order is {order.status}")
        order = await _finalize(uow, tenant_id, order_id, rt.clock.now())
        await uow.commit()
    return await apply_customer_credit(rt, tenant_id, order)


async def void_order(rt: Runtime, tenant_id: str, order_id: str) -> Order:
    """Cancel a draft or open order nothing was paid on; Conflict otherwise.

    An open order's finalization is reversed in the ledger. Credit applied to it goes back to
    the customer's balance: the customers service does that on `order.voided`, once.
    """
    now = rt.clock.now()
    async with rt.uow() as uow:
        order = await _load(uow, tenant_id, order_id, for_update=True)
        if order.status not in ("draft", "open"):
            raise Conflict(f"a {order.status} order cannot be voided")
        if order.amount_paid != 0:
            raise Conflict("an order with payments cannot be voided; refund them first")
        if order.status == "open":
            # Owed no more: revenue and tax are given up, and the credit applied is unapplied.
            await _post(
                uow,
                tenant_id,
                order,
                "order_voided",
                [
                    ledger.Line("revenue", debit=order.total - order.tax),
                    ledger.Line("tax_payable", debit=order.tax),
                    ledger.Line("customer_credit_applied", credit=order.credit_applied),
                    ledger.Line("accounts_receivable", credit=order.total - order.credit_applied),
                ],
                now,
            )
        await repo.update(
            uow, tenant_id, order_id, {"status": "void", "voided_at": now, "updated": now}
        )
        order = await _load(uow, tenant_id, order_id)
        await _record(uow, tenant_id, "order.voided", order, now)
        await uow.commit()
    return order


async def mark_uncollectible(rt: Runtime, tenant_id: str, order_id: str) -> Order:
    """Write off an open order (it can still be paid later); Conflict unless it is open."""
    now = rt.clock.now()
    async with rt.uow() as uow:
        order = await _load(uow, tenant_id, order_id, for_update=True)
        if order.status != "open":
            raise Conflict(
                f"only an open order can be marked uncollectible; this one is {order.status}"
            )
        order = await _write_off(uow, tenant_id, order_id, now)
        await uow.commit()
    return order


async def write_off_after_dunning(
    uow: UnitOfWork, tenant_id: str, order_id: str, now: datetime
) -> Order | None:
    """Mark an order uncollectible once its last payment retry failed, in the caller's (the
    event bus's) transaction. None when it is no longer open (paid or voided meanwhile)."""
    row = await repo.get(uow, tenant_id, order_id, for_update=True)
    if row is None or row.status != "open":
        return None
    return await _write_off(uow, tenant_id, order_id, now)


async def _write_off(uow: UnitOfWork, tenant_id: str, order_id: str, now: datetime) -> Order:
    owed = await _load(uow, tenant_id, order_id)
    await _post(
        uow,
        tenant_id,
        owed,
        "written_off",
        [
            ledger.Line("bad_debt", debit=owed.amount_due),
            ledger.Line("accounts_receivable", credit=owed.amount_due),
        ],
        now,
    )
    await repo.update(
        uow,
        tenant_id,
        order_id,
        {"status": "uncollectible", "marked_uncollectible_at": now, "updated": now},
    )
    order = await _load(uow, tenant_id, order_id)
    await _record(uow, tenant_id, "order.uncollectible", order, now)
    return order


async def apply_payment(
    uow: UnitOfWork, tenant_id: str, payment: dict[str, Any], now: datetime
) -> Order | None:
    """Count a succeeded payment towards its order, in the caller's (the event bus's) transaction.

    An open or uncollectible order paid in full becomes `paid`. `amount_paid` never exceeds
    the total. Returns the order, or None when the payment concerns no order of this tenant's.
    """
    order_id = payment.get("order_id")
    if not order_id:
        return None
    row = await repo.get(uow, tenant_id, order_id, for_update=True)
    if row is None:
        log.warning("payment %s names unknown order %s", payment.get("id"), order_id)
        return None
    if row.status == "void" or payment.get("currency") != row.currency:
        # Not ours to absorb: a void order owes nothing, and another currency is no payment
        # of this order. Left unapplied and logged; refunding it is for the payments side.
        log.warning(
            "payment %s (%s %s) not applied to %s order %s in %s",
            payment.get("id"),
            payment.get("amount"),
            payment.get("currency"),
            row.status,
            order_id,
            row.currency,
        )
        return None
    amount = int(payment["amount"])
    paid = min(row.amount_paid + max(amount, 0), row.total - row.credit_applied)
    if paid < row.amount_paid + amount:
        log.warning("payment %s overpays order %s", payment.get("id"), order_id)
    values: dict[str, Any] = {"amount_paid": paid, "updated": now}
    newly_paid = row.status in ("open", "uncollectible") and paid + row.credit_applied >= row.total
    if newly_paid:
        values.update(status="paid", paid_at=now)
    await repo.update(uow, tenant_id, order_id, values)
    order = await _load(uow, tenant_id, order_id)
    settles = "bad_debt" if row.status == "uncollectible" else "accounts_receivable"
    entry = payment_applied_entry(tenant_id, order, paid - row.amount_paid, settles)
    await ledger.post_many(uow, order_ledger, [entry], now)
    if newly_paid:
        await _record(uow, tenant_id, "order.paid", order, now)
    return order


async def render_invoice(rt: Runtime, tenant_id: str, order_id: str) -> str:
    """The order's invoice as a self-contained, printable HTML page."""
    order = await get_order(rt, tenant_id, order_id)
    # After our transaction closed: never hold a uow while calling another service.
    customer = await rt.customers.get(tenant_id, order.customer_id)
    return invoice.render(order, customer)
