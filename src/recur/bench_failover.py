"""`recur bench payment-failover`: the first gateway of a route down, payments through the next.

A new tenant configures `stripe` (a test key) and a routing rule `stripe` then `sandbox`.
Its customers' cards were attached while stripe was up, so each keeps a token there as well
as the sandbox's (the run writes the stripe tokens: it has no Stripe to ask). Stripe is
reached at a loopback port this run holds without listening: every connection is refused,
as when the gateway is down. N orders are then paid concurrently, as POST /v1/payments does.
Each payment tries stripe (a retriable error) and goes on to the sandbox, until stripe's
breaker opens; then stripe is skipped without a call, but for one trial per cool-down.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet
from pydantic import SecretStr

from recur.bench_payments import CONCURRENCY, payable_orders
from recur.gateway.keys import create_key
from recur.payments import attempts, gateway_config
from recur.payments.breaker import GatewayBreakers
from recur.payments.gateway_config_schemas import GatewayCreate
from recur.payments.gateways.base import PaymentGateway
from recur.payments.schemas import PaymentCreate
from recur.payments.service import create_payment
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings
from recur.verify import verify


@dataclass
class FailoverReport:
    payments: int
    succeeded_by_gateway: Counter[str]
    failed: int
    attempts_seen: Counter[tuple[str, str, str | None]]  # (gateway, outcome, failure code)
    stripe_calls: int
    stripe_answered: int
    orders_charged_twice: int
    pending_left: int
    verify_failures: list[str]
    seconds: float

    def lines(self) -> list[str]:
        by_gateway = ", ".join(
            f"{n} through {g}" for g, n in sorted(self.succeeded_by_gateway.items())
        )
        stripe = ", ".join(
            f"{outcome} {code} {n}"
            for (gateway, outcome, code), n in sorted(self.attempts_seen.items())
            if gateway == "stripe"
        )
        return [
            f"payments {self.payments}: succeeded {sum(self.succeeded_by_gateway.values())} "
            f"({by_gateway}), failed {self.failed}",
            f"attempts at stripe (down): {stripe}",
            f"charges sent to stripe {self.stripe_calls}, answered {self.stripe_answered} "
            "(every one refused: nothing charged there)",
            f"orders charged twice: {self.orders_charged_twice}",
            f"pending left {self.pending_left}",
            "recur verify: "
            + ("clean" if not self.verify_failures else ", ".join(self.verify_failures)),
            f"in {self.seconds:.1f} s",
        ]

    @property
    def ok(self) -> bool:
        return not (
            self.failed or self.orders_charged_twice or self.pending_left or self.verify_failures
        )


@dataclass
class GatewayCalls:
    """Every charge call the charge path sent, by gateway: keys, and those charged."""

    sent: Counter[str] = field(default_factory=Counter)
    answered: Counter[str] = field(default_factory=Counter)
    charged_keys: set[str] = field(default_factory=set)


@contextmanager
def observed_gateways(calls: GatewayCalls) -> Iterator[None]:
    """Observe every charge the charge path sends, at any gateway."""
    original = attempts.open_adapter

    def open_adapter(rt: Runtime, gateway: Any) -> PaymentGateway:
        adapter = original(rt, gateway)
        charge = adapter.charge

        async def observed(token: str, amount: int, currency: str, idempotency_key: str) -> Any:
            calls.sent[gateway.name] += 1
            result = await charge(token, amount, currency, idempotency_key)
            calls.answered[gateway.name] += 1
            if result.succeeded:
                calls.charged_keys.add(idempotency_key)
            return result

        adapter.charge = observed  # type: ignore[method-assign]
        return adapter

    attempts.open_adapter = open_adapter
    try:
        yield
    finally:
        attempts.open_adapter = original


async def failover_run(
    rt: Runtime, count: int, say: Callable[[str], None] = lambda _: None
) -> FailoverReport:
    """Seed a tenant routing `stripe` then `sandbox` with `count` payable orders, pay them with
    stripe down (rt's settings point it at a port that refuses connections), and report."""
    import sqlalchemy as sa

    from recur.payments.gateway_config_schemas import RoutingRuleCreate
    from recur.payments.routing_rules import create_rule
    from recur.payments.tables import payment_attempts, payment_method_tokens, payments

    issued = await create_key(rt.db, rt.clock, f"payment failover {secrets.token_hex(4)}")
    tenant_id = issued.tenant_id
    limit = asyncio.Semaphore(CONCURRENCY)
    started = time.perf_counter()
    seeded = await payable_orders(rt, tenant_id, count, "failover")
    api_key = f"sk_test_{secrets.token_hex(12)}"
    await gateway_config.create_gateway(
        rt, tenant_id, GatewayCreate(name="stripe", credentials={"api_key": api_key})
    )
    await create_rule(rt, tenant_id, RoutingRuleCreate(priority=1, gateways=["stripe", "sandbox"]))
    now = rt.clock.now()
    async with rt.uow() as uow:
        await uow.execute(
            sa.insert(payment_method_tokens),
            [
                {
                    "payment_method_id": method_id,
                    "gateway": "stripe",
                    "tenant_id": tenant_id,
                    "token": f"cus_{secrets.token_hex(7)}/pm_{secrets.token_hex(12)}",
                    "created": now,
                }
                for _, method_id in seeded
            ],
        )
        await uow.commit()
    say(f"seeded {count} customers, cards and orders in {time.perf_counter() - started:.1f} s")

    async def pay(order_id: str) -> None:
        async with limit:
            await create_payment(rt, tenant_id, PaymentCreate(order_id=order_id))

    calls = GatewayCalls()
    breakers = attempts.BREAKERS
    attempts.BREAKERS = GatewayBreakers()  # this run's own, at the default threshold
    started = time.perf_counter()
    try:
        with observed_gateways(calls):
            await asyncio.gather(*(pay(order_id) for order_id, _ in seeded))
    finally:
        attempts.BREAKERS = breakers
    seconds = time.perf_counter() - started

    async with rt.uow() as uow:
        rows = await uow.fetch_all(
            sa.select(
                payments.c.id, payments.c.order_id, payments.c.status, payments.c.gateway
            ).where(payments.c.tenant_id == tenant_id)
        )
        tried = await uow.fetch_all(
            sa.select(
                payment_attempts.c.payment_id,
                payment_attempts.c.gateway,
                payment_attempts.c.outcome,
                payment_attempts.c.failure_code,
                payment_attempts.c.idempotency_key,
            ).where(payment_attempts.c.tenant_id == tenant_id)
        )
    order_of = {row.id: row.order_id for row in rows}
    charges_per_order = Counter(
        order_of[a.payment_id] for a in tried if a.idempotency_key in calls.charged_keys
    )
    findings = await verify(rt.db)
    return FailoverReport(
        payments=len(rows),
        succeeded_by_gateway=Counter(row.gateway for row in rows if row.status == "succeeded"),
        failed=sum(1 for row in rows if row.status == "failed"),
        attempts_seen=Counter((a.gateway, a.outcome, a.failure_code) for a in tried),
        stripe_calls=calls.sent["stripe"],
        stripe_answered=calls.answered["stripe"],
        orders_charged_twice=sum(1 for n in charges_per_order.values() if n > 1),
        pending_left=sum(1 for row in rows if row.status == "pending"),
        verify_failures=[f.check for f in findings if not f.ok],
        seconds=seconds,
    )


def bench_payment_failover(
    settings: Settings, count: int, say: Callable[[str], None], stripe_url: str | None = None
) -> FailoverReport:
    """The failover run on the configured database, with stripe at `stripe_url`, or by default
    at a loopback port held here without listening (refused). Without a configured credentials
    key, the tenant's stripe key is encrypted with a key made for this run only."""
    import socket

    if settings.gateway_credentials_key is None:
        key = Fernet.generate_key().decode()
        settings = settings.model_copy(update={"gateway_credentials_key": SecretStr(key)})
    with socket.socket() as held:  # bound, never listening: connections to it are refused
        held.bind(("127.0.0.1", 0))
        url = stripe_url or f"http://127.0.0.1:{held.getsockname()[1]}"
        urls = {**settings.gateway_base_urls, "stripe": url.rstrip("/")}
        settings = settings.model_copy(update={"gateway_base_urls": urls})
        say(f"stripe at {urls['stripe']} (down)")

        async def run() -> FailoverReport:
            rt = build_runtime(settings)
            try:
                return await failover_run(rt, count, say)
            finally:
                await rt.close()

        return asyncio.run(run())
