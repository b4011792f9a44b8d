"""`recur bench payment-faults`: many payments through a misbehaving sandbox, none charged twice.

A new tenant sets its sandbox (its gateway credentials) to time out on 30% of charges (half of
those charged all the same, the answer lost) and to fail 10% with a retriable error. N customers
each get a card and an open order; the orders are paid concurrently, as POST /v1/payments does
(`service.create_payment`). A timeout leaves its payment pending; the reconciler then runs
until nothing is pending, asking the sandbox by each attempt's key and charging again, under a
new key, only what never arrived.

What the gateway charged is counted from the sandbox's own rules, not from Recur's tables:
every charge call is observed at the adapter (its key and token), and the sandbox's faults say
which keys it charged (answered, or timed out after charging). An order charged twice would
show two charged keys. The books are then checked with `recur verify`.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet
from pydantic import SecretStr

from recur.customers.schemas import CustomerCreate
from recur.customers.service import create_customer
from recur.gateway.keys import create_key
from recur.orders.schemas import OrderCreate, OrderLineIn
from recur.orders.service import create_order
from recur.payments import attempts, gateway_config
from recur.payments.breaker import GatewayBreakers
from recur.payments.gateway_config_schemas import GatewayCreate
from recur.payments.gateways.base import PaymentGateway
from recur.payments.gateways.sandbox import CHARGE_OK, TOKEN_PREFIX, SandboxGateway
from recur.payments.gateways.sandbox_faults import Fate, SandboxFaults
from recur.payments.methods import add_payment_method
from recur.payments.reconcile import ReconcileResult, reconcile
from recur.payments.schemas import CardIn, PaymentCreate, PaymentMethodCreate
from recur.payments.service import create_payment
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings
from recur.verify import verify

TIMEOUT_SHARE = 0.3
FAILURE_SHARE = 0.1
# Payments under way at once: each may hold two pooled connections (a service calling another).
CONCURRENCY = 6


@dataclass
class ChargeLog:
    """Every charge call the sandbox received: (idempotency key, token), per key once."""

    calls: Counter[str] = field(default_factory=Counter)
    tokens: dict[str, str] = field(default_factory=dict)
    timeouts: int = 0


@contextmanager
def observed_charges(log: ChargeLog) -> Iterator[None]:
    """Observe every charge the charge path sends to a sandbox adapter."""
    original = attempts.open_adapter

    def open_adapter(rt: Runtime, gateway: Any) -> PaymentGateway:
        adapter = original(rt, gateway)
        if isinstance(adapter, SandboxGateway):
            charge = adapter.charge

            async def observed(token: str, amount: int, currency: str, idempotency_key: str) -> Any:
                log.calls[idempotency_key] += 1
                log.tokens[idempotency_key] = token
                try:
                    return await charge(token, amount, currency, idempotency_key)
                except Exception as exc:
                    if getattr(exc, "code", None) == "timeout":
                        log.timeouts += 1
                    raise

            adapter.charge = observed  # type: ignore[method-assign]
        return adapter

    attempts.open_adapter = open_adapter
    try:
        yield
    finally:
        attempts.open_adapter = original


def charged_keys(log: ChargeLog, faults: SandboxFaults) -> set[str]:
    """The keys the sandbox charged, by its own rules: its fate for the key, and the card."""
    charged = set()
    for key, token in log.tokens.items():
        fate = faults.fate("charge", key)
        card_ok = token.startswith(f"{TOKEN_PREFIX}{CHARGE_OK}_")
        if card_ok and fate in (Fate.ANSWER, Fate.TIMEOUT_DONE):
            charged.add(key)
    return charged


@dataclass
class FaultReport:
    payments: int
    succeeded: int
    failed: int
    timeouts_seen: int
    reconciled: ReconcileResult
    max_charges_per_order: int
    orders_charged_twice: int
    succeeded_without_charge: int
    pending_left: int
    verify_failures: list[str]
    seconds: float
    breaker_skips: int = 0

    def lines(self) -> list[str]:
        r = self.reconciled
        return [
            f"payments {self.payments}: succeeded {self.succeeded}, failed {self.failed} "
            f"(gateways_unavailable: a retriable error at the only gateway; "
            f"breaker skips {self.breaker_skips})",
            f"timeouts seen at the gateway {self.timeouts_seen}",
            f"reconciled {r.succeeded + r.failed} (succeeded {r.succeeded}, failed {r.failed}; "
            f"charged again under a new key {r.retried})",
            f"charges made at the gateway per order: at most {self.max_charges_per_order} "
            f"(orders charged twice: {self.orders_charged_twice}; succeeded payments "
            f"without a charge: {self.succeeded_without_charge})",
            f"pending left {self.pending_left}",
            "recur verify: "
            + ("clean" if not self.verify_failures else ", ".join(self.verify_failures)),
            f"in {self.seconds:.1f} s",
        ]


async def payable_orders(
    rt: Runtime, tenant_id: str, count: int, run: str
) -> list[tuple[str, str]]:
    """`count` customers of the tenant, each with a sandbox card and an open order of 1000 USD,
    made as the API makes them: (order id, payment method id) each."""
    limit = asyncio.Semaphore(CONCURRENCY)
    year = rt.clock.now().year + 3

    async def payable_order(n: int) -> tuple[str, str]:
        async with limit:
            customer = await create_customer(
                rt, tenant_id, CustomerCreate(email=f"{run}{n}@example.com", currency="USD")
            )
            card = CardIn(number="4242424242424242", exp_month=12, exp_year=year, cvc="123")
            method = await add_payment_method(
                rt, tenant_id, customer.id, PaymentMethodCreate(card=card)
            )
            order = await create_order(
                rt,
                tenant_id,
                OrderCreate(
                    customer_id=customer.id,
                    lines=[OrderLineIn(description=f"{run} run", unit_amount=1000, quantity=1)],
                ),
            )
            return order.id, method.id

    return list(await asyncio.gather(*(payable_order(n) for n in range(count))))


async def fault_run(
    rt: Runtime, count: int, say: Callable[[str], None] = lambda _: None
) -> FaultReport:
    """Seed a tenant with `count` payable orders, pay them through a faulty sandbox, reconcile
    until nothing is pending, and report (see the module docstring)."""
    issued = await create_key(rt.db, rt.clock, f"payment faults {secrets.token_hex(4)}")
    tenant_id = issued.tenant_id
    faults = SandboxFaults(
        timeout_share=TIMEOUT_SHARE, failure_share=FAILURE_SHARE, seed=secrets.token_hex(8)
    )
    await gateway_config.create_gateway(
        rt,
        tenant_id,
        GatewayCreate(name="sandbox", credentials={"faults": faults.model_dump(mode="json")}),
    )
    limit = asyncio.Semaphore(CONCURRENCY)
    started = time.perf_counter()
    order_ids = [order_id for order_id, _ in await payable_orders(rt, tenant_id, count, "faults")]
    say(f"seeded {count} customers, cards and orders in {time.perf_counter() - started:.1f} s")

    log = ChargeLog()
    reconciled = ReconcileResult()
    started = time.perf_counter()

    async def pay(order_id: str) -> None:
        async with limit:
            await create_payment(rt, tenant_id, PaymentCreate(order_id=order_id))

    # The sandbox fails 40% of charges here: a breaker would rightly keep it open for most of
    # the run and fail the payments fast, leaving no unknown outcome to reconcile. This run is
    # about those, so its breaker never opens (failover tests cover the breaker).
    breakers = attempts.BREAKERS
    attempts.BREAKERS = GatewayBreakers(failures_to_open=1_000_000_000)
    try:
        with observed_charges(log):
            await _pay_and_reconcile(rt, tenant_id, order_ids, pay, reconciled, say)
    finally:
        attempts.BREAKERS = breakers
    seconds = time.perf_counter() - started
    return await _report(rt, tenant_id, count, log, faults, reconciled, seconds)


async def _pay_and_reconcile(
    rt: Runtime,
    tenant_id: str,
    order_ids: list[str],
    pay: Callable[[str], Any],
    reconciled: ReconcileResult,
    say: Callable[[str], None],
) -> None:
    started = time.perf_counter()
    await asyncio.gather(*(pay(order_id) for order_id in order_ids))
    say(f"paid {len(order_ids)} orders in {time.perf_counter() - started:.1f} s; reconciling")
    for _ in range(100):
        one = await reconcile(rt, tenant_id=tenant_id, unknown_after=timedelta(0))
        reconciled.add(one)
        if await _pending(rt, tenant_id) == 0:
            break


async def _pending(rt: Runtime, tenant_id: str) -> int:
    import sqlalchemy as sa

    from recur.payments.tables import payments

    async with rt.uow() as uow:
        return int(
            (
                await uow.execute(
                    sa.select(sa.func.count()).where(
                        payments.c.tenant_id == tenant_id, payments.c.status == "pending"
                    )
                )
            ).scalar_one()
        )


async def _report(
    rt: Runtime,
    tenant_id: str,
    count: int,
    log: ChargeLog,
    faults: SandboxFaults,
    reconciled: ReconcileResult,
    seconds: float,
) -> FaultReport:
    import sqlalchemy as sa

    from recur.payments.tables import payment_attempts, payments

    async with rt.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(payments.c.id, payments.c.order_id, payments.c.status).where(
                payments.c.tenant_id == tenant_id
            )
        )
        keys = await uow.fetch_all(
            sa.select(
                payment_attempts.c.payment_id,
                payment_attempts.c.idempotency_key,
                payment_attempts.c.failure_code,
            ).where(payment_attempts.c.tenant_id == tenant_id)
        )
    order_of = {row.id: row.order_id for row in rows}
    charged = charged_keys(log, faults)
    # Keys the gateway received, by order: every key Recur sends is an attempt's key.
    per_order: dict[str, int] = defaultdict(int)
    charged_payments = set()
    for row in keys:
        if row.idempotency_key in charged:
            per_order[order_of[row.payment_id]] += 1
            charged_payments.add(row.payment_id)
    unknown_keys = set(log.calls) - {row.idempotency_key for row in keys}
    assert not unknown_keys, f"charges with keys no attempt has: {sorted(unknown_keys)[:3]}"
    statuses = Counter(row.status for row in rows)
    succeeded_ids = {row.id for row in rows if row.status == "succeeded"}
    findings = await verify(rt.db)
    return FaultReport(
        payments=len(rows),
        succeeded=statuses["succeeded"],
        failed=statuses["failed"],
        timeouts_seen=log.timeouts,
        reconciled=reconciled,
        max_charges_per_order=max(per_order.values(), default=0),
        orders_charged_twice=sum(1 for n in per_order.values() if n > 1),
        succeeded_without_charge=len(succeeded_ids - charged_payments),
        pending_left=statuses["pending"],
        verify_failures=[f.check for f in findings if not f.ok],
        seconds=seconds,
        breaker_skips=sum(1 for row in keys if row.failure_code == "breaker_open"),
    )


def bench_payment_faults(settings: Settings, count: int, say: Callable[[str], None]) -> FaultReport:
    """The fault run on the configured database. Without a configured credentials key, the
    tenant's sandbox settings are encrypted with a key made for this run only."""
    if settings.gateway_credentials_key is None:
        key = Fernet.generate_key().decode()
        settings = settings.model_copy(update={"gateway_credentials_key": SecretStr(key)})

    async def run() -> FaultReport:
        rt = build_runtime(settings)
        try:
            return await fault_run(rt, count, say)
        finally:
            await rt.close()

    return asyncio.run(run())
