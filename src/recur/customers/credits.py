"""Customer credit balance: granted by hand or by prorations, spent on the next orders."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recur.customers import repository as repo
from recur.customers.schemas import BalanceTransaction, CreditCreate, CreditRequest, CreditType
from recur.customers.tables import ledger as ledger_accounts
from recur.kit import ledger
from recur.kit.errors import InvalidRequest, NotFound
from recur.kit.ids import new_id
from recur.kit.money import CurrencyError, normalize_currency
from recur.kit.pagination import Page, to_page

if TYPE_CHECKING:
    from datetime import datetime

    from recur.kit.db import UnitOfWork
    from recur.runtime import Runtime

MAX_BALANCE = 2**63 - 1


async def _locked_customer(uow: UnitOfWork, tenant_id: str, customer_id: str) -> Any:
    row = await repo.get_for_update(uow, tenant_id, customer_id)
    if row is None:
        raise NotFound(f"no such customer: {customer_id}", param="customer_id")
    return row


async def grant_credit(
    rt: Runtime,
    tenant_id: str,
    customer_id: str,
    amount: int,
    currency: str,
    *,
    type_: CreditType = "manual",
    source_id: str | None = None,
    description: str | None = None,
) -> BalanceTransaction:
    """Add credit to the customer's balance. With a `source_id`, granting twice grants once."""
    try:
        currency = normalize_currency(currency)
    except CurrencyError as exc:
        raise InvalidRequest(f"unknown currency {currency!r}", param="currency") from exc
    if amount <= 0:
        raise InvalidRequest("a credit must be positive", param="amount")
    source_id = source_id or new_id("cred")
    now = rt.clock.now()
    async with rt.uow() as uow:
        customer = await _locked_customer(uow, tenant_id, customer_id)
        done = await repo.balance_transaction_by_source(uow, tenant_id, type_, source_id)
        if done is not None:
            return repo.to_balance_transaction(done)
        if customer.currency is not None and customer.currency != currency:
            raise InvalidRequest(
                f"the customer is billed in {customer.currency}, not {currency}",
                param="currency",
                code="currency_mismatch",
            )
        if customer.currency is None:
            await repo.update(uow, tenant_id, customer_id, {"currency": currency})
        ending = customer.balance + amount
        if ending > MAX_BALANCE:
            raise InvalidRequest("the balance would be too large", param="amount")
        values = {
            "id": new_id("cbtxn"),
            "tenant_id": tenant_id,
            "customer_id": customer_id,
            "type": type_,
            "amount": amount,
            "currency": currency,
            "ending_balance": ending,
            "source_id": source_id,
            "description": description,
            "created": now,
        }
        await repo.record_balance_change(uow, values, customer_id, ending)
        # Credit granted is owed to the customer: a liability. Proration credits are revenue
        # given back; credit by hand is a concession.
        contra = "revenue_reversal" if type_ == "proration" else "credit_concessions"
        await ledger.post(
            uow,
            ledger_accounts,
            tenant_id=tenant_id,
            kind="credit_granted",
            source_id=values["id"],
            customer_id=customer_id,
            currency=currency,
            lines=[
                ledger.Line(contra, debit=amount),
                ledger.Line("customer_credit", credit=amount),
            ],
            at=now,
        )
        await uow.commit()
    return BalanceTransaction.model_validate(values)


async def grant_manual_credit(
    rt: Runtime, tenant_id: str, customer_id: str, params: CreditCreate
) -> BalanceTransaction:
    """`POST /v1/customers/{id}/credits`: credit in the customer's currency."""
    currency = params.currency
    if currency is None:
        customer = await rt.customers.get(tenant_id, customer_id)
        if customer.currency is None:
            raise InvalidRequest("the customer has no currency yet: give one", param="currency")
        currency = customer.currency
    return await grant_credit(
        rt, tenant_id, customer_id, params.amount, currency, description=params.description
    )


async def apply_credit(
    rt: Runtime, tenant_id: str, customer_id: str, order_id: str, currency: str, max_amount: int
) -> int:
    """Spend up to `max_amount` of the customer's credit on an order; how much was spent.

    Asking again for the same order spends nothing more and answers the same amount.
    """
    request = CreditRequest(customer_id, order_id, currency, max_amount)
    return (await apply_credits(rt, tenant_id, [request])).get(order_id, 0)


async def apply_credits(
    rt: Runtime, tenant_id: str, requests: Sequence[CreditRequest]
) -> dict[str, int]:
    """Spend credit on many orders at once (the bill run's batches); what each got, by order.

    Only customers that hold credit are locked and written, so a batch of customers without
    any costs two reads. Each order gets credit once: asked again, it answers the same amount.
    """
    if not requests:
        return {}
    async with rt.uow() as uow:
        done = await repo.balance_transactions_by_sources(
            uow, tenant_id, "applied_to_order", [r.order_id for r in requests]
        )
        holders = {
            row.id: row
            for row in await repo.lock_with_credit(
                uow, tenant_id, [r.customer_id for r in requests]
            )
        }
        balances = {customer_id: int(row.balance) for customer_id, row in holders.items()}
        now = rt.clock.now()
        applied: dict[str, int] = {}
        entries: list[ledger.Entry] = []
        for request in requests:
            if request.order_id in done:
                applied[request.order_id] = -int(done[request.order_id].amount)
                continue
            holder = holders.get(request.customer_id)
            balance = balances.get(request.customer_id, 0)
            if holder is None or holder.currency != request.currency or balance <= 0:
                continue
            amount = min(balance, request.max_amount)
            if amount <= 0:
                continue
            balances[request.customer_id] = balance - amount
            applied[request.order_id] = amount
            await repo.record_balance_change(
                uow,
                {
                    "id": new_id("cbtxn"),
                    "tenant_id": tenant_id,
                    "customer_id": request.customer_id,
                    "type": "applied_to_order",
                    "amount": -amount,
                    "currency": request.currency,
                    "ending_balance": balance - amount,
                    "source_id": request.order_id,
                    "description": None,
                    "created": now,
                },
                request.customer_id,
                balance - amount,
            )
            # The credit pays part of an order: the liability to the customer becomes a
            # payment toward what it owes.
            entries.append(
                ledger.Entry(
                    tenant_id,
                    "credit_applied",
                    request.order_id,
                    request.customer_id,
                    request.currency,
                    [
                        ledger.Line("customer_credit", debit=amount),
                        ledger.Line("credit_applied_to_orders", credit=amount),
                    ],
                )
            )
        await ledger.post_many(uow, ledger_accounts, entries, now)
        await uow.commit()
    return applied


async def unapply_credit_in(
    uow: UnitOfWork, tenant_id: str, customer_id: str, order_id: str, now: datetime
) -> int:
    """Give back, in the caller's transaction, the credit spent on an order that will not be
    paid with it (voided); how much. Once per order: asking again gives back nothing more and
    answers the same amount; 0 when no credit was spent on the order."""
    customer = await repo.get_for_update(uow, tenant_id, customer_id)
    spent = await repo.balance_transaction_by_source(uow, tenant_id, "applied_to_order", order_id)
    if customer is None or spent is None:
        return 0
    done = await repo.balance_transaction_by_source(
        uow, tenant_id, "unapplied_from_order", order_id
    )
    if done is not None:
        return int(done.amount)
    amount = -int(spent.amount)
    ending = customer.balance + amount
    values = {
        "id": new_id("cbtxn"),
        "tenant_id": tenant_id,
        "customer_id": customer_id,
        "type": "unapplied_from_order",
        "amount": amount,
        "currency": spent.currency,
        "ending_balance": ending,
        "source_id": order_id,
        "description": None,
        "created": now,
    }
    await repo.record_balance_change(uow, values, customer_id, ending)
    # The reverse of applying it: the order no longer takes the credit, the customer holds it.
    await ledger.post(
        uow,
        ledger_accounts,
        tenant_id=tenant_id,
        kind="credit_unapplied",
        source_id=order_id,
        customer_id=customer_id,
        currency=spent.currency,
        lines=[
            ledger.Line("credit_applied_to_orders", debit=amount),
            ledger.Line("customer_credit", credit=amount),
        ],
        at=now,
    )
    return amount


async def unapply_credit(rt: Runtime, tenant_id: str, customer_id: str, order_id: str) -> int:
    """Give back the credit spent on an order that will not be paid with it; once per order."""
    async with rt.uow() as uow:
        amount = await unapply_credit_in(uow, tenant_id, customer_id, order_id, rt.clock.now())
        await uow.commit()
    return amount


async def list_balance_transactions(
    rt: Runtime, tenant_id: str, customer_id: str, limit: int, starting_after: str | None
) -> Page[BalanceTransaction]:
    """The customer's balance changes, newest first."""
    async with rt.uow() as uow:
        if await repo.get(uow, tenant_id, customer_id) is None:
            raise NotFound(f"no such customer: {customer_id}", param="customer_id")
        rows, has_more = await repo.balance_page(uow, tenant_id, customer_id, limit, starting_after)
    return to_page(rows, has_more, repo.to_balance_transaction)
