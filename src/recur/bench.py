"""`recur bench bill-run`: seed N subscriptions due for renewal, run the bill run, measure it.

The tenant, its product and its plan are made through the services, as a user would. The N
customers, their cards and their subscriptions are written in bulk, straight into the tables:
going through the API would make the seeding, not the bill run, the thing measured. Each row is
what the services themselves write (a sandbox token that always charges, a customer billed in
the plan's currency with that card as its default, a subscription whose first period, paid
before, ends now).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from recur.bill_run import run_workers
from recur.customers.tables import counters as customer_counters
from recur.customers.tables import customers
from recur.gateway.keys import create_key
from recur.kit.ids import new_id
from recur.payments.gateways.sandbox import CHARGE_OK, TOKEN_PREFIX
from recur.payments.tables import payment_methods
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings
from recur.subscriptions import catalog
from recur.subscriptions.periods import period_boundary
from recur.subscriptions.schemas import PlanCreate, ProductCreate
from recur.subscriptions.tables import subscriptions

SEED_CHUNK = 5_000
PLAN_AMOUNT = 1999


@dataclass(frozen=True)
class Seeded:
    tenant_id: str
    plan_id: str
    subscriptions: int


def _chunks(total: int, size: int) -> Iterator[int]:
    done = 0
    while done < total:
        yield min(size, total - done)
        done += size


async def seed(rt: Runtime, count: int, now: datetime) -> Seeded:
    """A new tenant with `count` monthly subscriptions whose next renewal is due by `now`."""
    issued = await create_key(rt.db, rt.clock, f"bench {new_id('t')}")
    tenant_id = issued.tenant_id
    product = await catalog.create_product(rt, tenant_id, ProductCreate(name="Bench"))
    plan = await catalog.create_plan(
        rt,
        tenant_id,
        PlanCreate(product_id=product.id, currency="USD", amount=PLAN_AMOUNT, interval="month"),
    )
    # A month paid 31 days ago has ended by now, whatever the month.
    start = now - timedelta(days=31)
    end = period_boundary(start, "month", 1, 1)
    number = 0
    for size in _chunks(count, SEED_CHUNK):
        customer_rows: list[dict[str, Any]] = []
        method_rows: list[dict[str, Any]] = []
        subscription_rows: list[dict[str, Any]] = []
        for _ in range(size):
            number += 1
            customer_id, method_id = new_id("cus"), new_id("pm")
            customer_rows.append(
                {
                    "id": customer_id,
                    "tenant_id": tenant_id,
                    "number": number,
                    "email": f"bench{number}@example.com",
                    "currency": "USD",
                    "metadata": {},
                    "default_payment_method_id": method_id,
                    "tax_rate_ids": [],
                    "balance": 0,
                    "created": start,
                    "updated": start,
                }
            )
            method_rows.append(
                {
                    "id": method_id,
                    "tenant_id": tenant_id,
                    "customer_id": customer_id,
                    "gateway": "sandbox",
                    "gateway_token": f"{TOKEN_PREFIX}{CHARGE_OK}_{new_id('x')}",
                    "brand": "visa",
                    "last4": "4242",
                    "exp_month": 12,
                    "exp_year": now.year + 3,
                    "created": start,
                }
            )
            subscription_rows.append(
                {
                    "id": new_id("sub"),
                    "tenant_id": tenant_id,
                    "customer_id": customer_id,
                    "plan_id": plan.id,
                    "quantity": 1,
                    "status": "active",
                    "currency": "USD",
                    "billing_cycle_anchor": start,
                    "period_index": 0,
                    "current_period_start": start,
                    "current_period_end": end,
                    "cancel_at_period_end": False,
                    "metadata": {},
                    "created": start,
                    "updated": start,
                    "next_action_at": end,
                }
            )
        async with rt.uow() as uow:
            await uow.execute(sa.insert(customers), customer_rows)
            await uow.execute(sa.insert(payment_methods), method_rows)
            await uow.execute(sa.insert(subscriptions), subscription_rows)
            await uow.commit()
    async with rt.uow() as uow:
        await uow.execute(
            sa.insert(customer_counters).values(tenant_id=tenant_id, name="customer", value=number)
        )
        await uow.commit()
    return Seeded(tenant_id, plan.id, count)


@dataclass(frozen=True)
class BenchResult:
    subscriptions: int
    renewed: int
    failed: int
    errors: int
    seconds: float
    peak_memory_mib: float  # the largest of the workers'

    @property
    def rate(self) -> float:
        return self.renewed / self.seconds if self.seconds else 0.0


def bench_bill_run(
    settings: Settings,
    count: int,
    workers: int,
    batch_size: int,
    say: Callable[[str], None],
) -> BenchResult:
    """Seed `count` due subscriptions, then time `workers` bill-run processes renewing them."""

    async def prepare() -> datetime:
        rt = build_runtime(settings)
        try:
            now = rt.clock.now()
            await seed(rt, count, now)
            return now
        finally:
            await rt.close()

    started = time.perf_counter()
    now = asyncio.run(prepare())
    say(f"seeded {count} due subscriptions in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    outcome = run_workers(settings, now=now, workers=workers, batch_size=batch_size)
    seconds = time.perf_counter() - started
    for failure in outcome.failures:
        say(failure)
    return BenchResult(
        subscriptions=count,
        renewed=outcome.result.renewed,
        failed=outcome.result.failed,
        errors=outcome.result.errors,
        seconds=seconds,
        peak_memory_mib=outcome.peak_memory_mib,
    )
