"""Charging a payment through its route: one attempt per gateway, failover, exactly once.

A payment's route is the ordered gateways `routing.choose_route` picks for it (the draw comes
from the payment id, so a retry takes the same route). Each gateway is one attempt, written
before the call and numbered 1, 2, ...; its idempotency key is `<payment id>-<number>`, and the
charge carries it. Then, gateway by gateway:

| the gateway                          | the attempt       | the payment                     |
|--------------------------------------|-------------------|---------------------------------|
| breaker open, or no token of the card| `skipped`         | goes on with the next gateway   |
| charged                              | `succeeded`       | succeeded (settled)             |
| declined                             | `declined`        | failed; no other gateway tried  |
| `GatewayRetriableError`              | `retriable_error` | goes on with the next gateway   |
| `GatewayOutcomeUnknown` (or any      | `unknown`         | stays `pending` at this gateway:|
| other error: it may have charged)    |                   | the reconciler asks it, by key  |

When no gateway is left, nothing was charged anywhere, certainly: the payment fails with
`gateways_unavailable`, as Stripe fails a charge its processor could not reach, so that dunning
retries a renewal later and a customer may try again at once. A payment never has two live
attempts (an attempt is live while its outcome is null or `unknown`): the next attempt is
written only once the last is known not to have charged.

Payments are charged in rounds, so a batch stays a batch: each round writes its attempts in one
transaction, calls the gateways concurrently outside any transaction, and writes the outcomes in
one transaction; only payments whose gateway failed retriably go on to the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from cryptography.fernet import MultiFernet

from recur.kit.db import UnitOfWork, insert_ignoring_conflicts
from recur.kit.ids import new_id
from recur.payments import routing
from recur.payments.breaker import BREAKERS
from recur.payments.credentials import credentials_cipher
from recur.payments.gateway_config import RoutedGateway, rules_of, usable_gateways
from recur.payments.gateways import build_gateway
from recur.payments.gateways.base import (
    ChargeResult,
    GatewayOutcomeUnknown,
    GatewayRetriableError,
    PaymentGateway,
)
from recur.payments.gateways.manual import METHOD_OF_TOKEN as MANUAL_METHODS
from recur.payments.gateways.manual import NAME as MANUAL
from recur.payments.schemas import PaymentAttempt
from recur.payments.tables import payment_attempts, payment_method_tokens, payment_methods, payments

if TYPE_CHECKING:
    from recur.payments.schemas import Payment
    from recur.runtime import Runtime

log = logging.getLogger("recur.payments")

# Gateway calls under way at once; a real gateway answers in tens of milliseconds.
GATEWAY_CONCURRENCY = 64
SUCCEEDED, DECLINED, RETRIABLE, UNKNOWN, SKIPPED = (
    "succeeded",
    "declined",
    "retriable_error",
    "unknown",
    "skipped",
)
# Outcomes of an attempt that may still have charged: at most one per payment.
LIVE = (None, UNKNOWN)
UNAVAILABLE = "gateways_unavailable"


def attempt_key(payment_id: str, number: int) -> str:
    """The idempotency key every charge of this attempt carries."""
    return f"{payment_id}-{number}"


def open_adapter(rt: Runtime, gateway: RoutedGateway) -> PaymentGateway:
    """The adapter of a routed gateway, at its base URL from the settings when one is set
    (RECUR_GATEWAY_BASE_URLS: a gateway's mock server, or the tests' fakes). The manual
    gateway reads operators' marks, so the reconciler learns of them too."""
    if gateway.name == MANUAL:
        # Imported here: marking a payment settles it through the batch module, which
        # charges through this one.
        from recur.payments.operator_marks import marks_reader

        return build_gateway(
            gateway.name, gateway.credentials, clock=rt.clock, operator_marks=marks_reader(rt)
        )
    return build_gateway(
        gateway.name,
        gateway.credentials,
        clock=rt.clock,
        base_url=rt.settings.gateway_base_urls.get(gateway.name),
    )


@dataclass
class Router:
    """A tenant's routing rules and usable gateways, read once for a batch of payments."""

    rules: list[routing.Rule]
    unusable: dict[str, str | None]
    credentials: dict[str, dict[str, Any]]

    def route(
        self,
        payment_id: str,
        currency: str,
        amount: int,
        card_brand: str | None,
        method: str = "card",
    ) -> routing.Route:
        facts = routing.PaymentFacts(
            currency=currency, amount=amount, card_brand=card_brand, method=method
        )
        return routing.choose_route(self.rules, facts, routing.draw_for(payment_id), self.unusable)

    def routed(self, names: Sequence[str]) -> list[RoutedGateway]:
        return [RoutedGateway(n, self.credentials[n]) for n in names if n in self.credentials]


async def load_router(rt: Runtime, tenant_id: str) -> Router:
    async with rt.uow() as uow:
        return await router_in(uow, credentials_cipher(rt.settings), tenant_id)


async def router_in(uow: UnitOfWork, cipher: MultiFernet | None, tenant_id: str) -> Router:
    rules = await rules_of(uow, tenant_id)
    unusable, credentials = await usable_gateways(uow, cipher, tenant_id)
    return Router(rules, unusable, credentials)


async def tokens_of(
    uow: UnitOfWork, tenant_id: str, method_ids: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Each payment method's token at each gateway it was tokenized at."""
    ids = sorted(set(method_ids))
    if not ids:
        return {}
    tokens: dict[str, dict[str, str]] = {i: {} for i in ids}
    rows = await uow.fetch_all(
        sa.select(
            payment_methods.c.id, payment_methods.c.gateway, payment_methods.c.gateway_token
        ).where(payment_methods.c.id.in_(ids), payment_methods.c.tenant_id == tenant_id)
    )
    for row in rows:
        tokens[row.id][row.gateway] = row.gateway_token
    extra = await uow.fetch_all(
        sa.select(payment_method_tokens).where(
            payment_method_tokens.c.payment_method_id.in_(ids),
            payment_method_tokens.c.tenant_id == tenant_id,
        )
    )
    for row in extra:
        tokens[row.payment_method_id].setdefault(row.gateway, row.token)
    return tokens


@dataclass
class Candidate:
    """A pending payment to charge: the gateways left to try, and the card's tokens."""

    payment_id: str
    amount: int
    currency: str
    gateways: list[RoutedGateway]
    tokens: dict[str, str]
    next_number: int = 1
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (gateway, why) to record


def _attempt_row(
    tenant_id: str,
    c: Candidate,
    gateway: str,
    now: Any,
    *,
    token: str | None = None,
    skipped: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The next attempt of the payment: to call with `token`, or `skipped` (code, why)."""
    number = c.next_number
    c.next_number += 1
    return {
        "id": new_id("att"),
        "tenant_id": tenant_id,
        "payment_id": c.payment_id,
        "number": number,
        "gateway": gateway,
        "idempotency_key": attempt_key(c.payment_id, number),
        "token": token,
        "outcome": SKIPPED if skipped else None,
        "failure_code": skipped[0] if skipped else None,
        "failure_message": skipped[1] if skipped else None,
        "gateway_reference": None,
        "created": now,
        "settled_at": now if skipped else None,
    }


def _plan(
    tenant_id: str, c: Candidate, now: Any
) -> tuple[list[dict[str, Any]], tuple[dict[str, Any], RoutedGateway] | None]:
    """The attempts of one round for a payment: the skipped gateways, then the one to call."""
    rows = [
        _attempt_row(tenant_id, c, name, now, skipped=("gateway_unusable", why))
        for name, why in c.skipped
    ]
    c.skipped = []
    while c.gateways:
        gateway = c.gateways.pop(0)
        token = c.tokens.get(gateway.name)
        if token is None:
            why = ("no_token", "the card has no token at this gateway")
            rows.append(_attempt_row(tenant_id, c, gateway.name, now, skipped=why))
        elif not BREAKERS.admits(tenant_id, gateway.name):
            why = ("breaker_open", "the gateway's circuit breaker is open")
            rows.append(_attempt_row(tenant_id, c, gateway.name, now, skipped=why))
        else:
            live = _attempt_row(tenant_id, c, gateway.name, now, token=token)
            rows.append(live)
            return rows, (live, gateway)
    return rows, None


@dataclass
class Outcome:
    """What one round's call of one attempt ended in."""

    attempt: dict[str, Any]
    gateway: str
    result: ChargeResult | None = None
    error: str | None = None  # RETRIABLE or UNKNOWN
    code: str | None = None
    message: str | None = None
    reference: str | None = None


async def _call(
    rt: Runtime,
    tenant_id: str,
    calls: list[tuple[dict[str, Any], RoutedGateway, Candidate]],
) -> list[Outcome]:
    limit = asyncio.Semaphore(GATEWAY_CONCURRENCY)
    adapters: dict[str, PaymentGateway] = {}

    def adapter(gateway: RoutedGateway) -> PaymentGateway:
        if gateway.name not in adapters:
            adapters[gateway.name] = open_adapter(rt, gateway)
        return adapters[gateway.name]

    async def one(attempt: dict[str, Any], gateway: RoutedGateway, c: Candidate) -> Outcome:
        async with limit:
            try:
                result = await adapter(gateway).charge(
                    attempt["token"],
                    c.amount,
                    c.currency,
                    idempotency_key=attempt["idempotency_key"],
                )
            except GatewayRetriableError as exc:
                BREAKERS.failed(tenant_id, gateway.name)
                return Outcome(
                    attempt, gateway.name, error=RETRIABLE, code=exc.code, message=exc.message
                )
            except GatewayOutcomeUnknown as exc:
                if gateway.name != MANUAL:
                    # (The manual gateway always answers "awaiting the operator": no fault.)
                    BREAKERS.failed(tenant_id, gateway.name)
                return Outcome(
                    attempt,
                    gateway.name,
                    error=UNKNOWN,
                    code=exc.code,
                    message=exc.message,
                    reference=exc.reference,
                )
            except Exception:
                # An error no adapter should raise: the charge may have been made, so it is
                # treated as unknown (the reconciler asks), never sent elsewhere.
                log.exception("gateway %s raised on charge %s", gateway.name, attempt["id"])
                BREAKERS.failed(tenant_id, gateway.name)
                return Outcome(
                    attempt,
                    gateway.name,
                    error=UNKNOWN,
                    code="gateway_error",
                    message="the gateway's answer could not be read",
                )
            BREAKERS.succeeded(tenant_id, gateway.name)
            return Outcome(attempt, gateway.name, result=result)

    try:
        return list(await asyncio.gather(*(one(*call) for call in calls)))
    finally:
        for opened in adapters.values():
            await opened.aclose()


@dataclass
class Round:
    """One round of attempts: the rows to write (skipped gateways, then the live attempt of
    each payment), the calls to make, and the payments no gateway is left for."""

    rows: list[dict[str, Any]]
    calls: list[tuple[dict[str, Any], RoutedGateway, Candidate]]
    exhausted: list[Candidate]


def plan_round(tenant_id: str, candidates: Sequence[Candidate], now: Any) -> Round:
    """The next round of attempts of each payment (taking the gateways it uses off them)."""
    planned = Round([], [], [])
    for c in candidates:
        rows, call = _plan(tenant_id, c, now)
        planned.rows += rows
        if call is None:
            planned.exhausted.append(c)
        else:
            planned.calls.append((call[0], call[1], c))
    return planned


async def insert_attempts(uow: UnitOfWork, rows: list[dict[str, Any]]) -> None:
    """Write a first round's attempts in the transaction that writes their new payments."""
    if rows:
        await uow.execute(sa.insert(payment_attempts), rows)


async def run_attempts(
    rt: Runtime, tenant_id: str, candidates: Sequence[Candidate], *, first: Round | None = None
) -> dict[str, Payment]:
    """Charge each pending payment along its gateways, in rounds (see the module docstring).
    The payments settled, by id; those left pending (an unknown outcome) are not among them.
    `first` is a first round the caller has written already (`insert_attempts`)."""
    from recur.payments.batch import settle  # settle writes the ledger and events of batch

    settled: dict[str, Payment] = {}
    live = list(candidates)
    planned = first
    while live:
        retried: list[Candidate] = []
        # One wave of calls at a time, each written just before it is sent: a written attempt
        # goes out within one wave's time (an adapter's timeout at most), long before the
        # reconciler would take an attempt still unsent for one a dead process left
        # (STRANDED_AFTER) and charge its payment again under the next key.
        for start in range(0, len(live), GATEWAY_CONCURRENCY):
            wave = live[start : start + GATEWAY_CONCURRENCY]
            if planned is None:
                now = rt.clock.now()
                planned = plan_round(tenant_id, wave, now)
                written = await _write_attempts(
                    rt, tenant_id, planned.rows, [c.payment_id for c in wave], now
                )
            else:
                written = {row["id"] for row in planned.rows}
            # An attempt number taken meanwhile means another process is charging the payment.
            calls = [call for call in planned.calls if call[0]["id"] in written]
            outcomes = await _call(rt, tenant_id, calls)
            results: dict[str, ChargeResult] = {
                c.payment_id: ChargeResult(
                    False, None, UNAVAILABLE, "no payment gateway could take the payment now"
                )
                for c in planned.exhausted
            }
            undecided: list[Outcome] = []
            by_attempt = {call[0]["id"]: call[2] for call in calls}
            for outcome in outcomes:
                c = by_attempt[outcome.attempt["id"]]
                if outcome.result is not None:
                    results[c.payment_id] = outcome.result
                else:
                    undecided.append(outcome)
                    if outcome.error == RETRIABLE:
                        retried.append(c)
            await _record(rt, tenant_id, undecided)
            settled.update(await settle(rt, tenant_id, results))
            planned = None
        live = retried
    return settled


async def _write_attempts(
    rt: Runtime, tenant_id: str, rows: list[dict[str, Any]], payment_ids: list[str], now: Any
) -> set[str]:
    """Write a round's attempts and touch their payments (a chain under way is not stranded);
    the ids written."""
    if not rows:
        return set()
    async with rt.uow() as uow:
        stmt = insert_ignoring_conflicts(uow.conn, payment_attempts).returning(
            payment_attempts.c.id
        )
        written = set((await uow.execute(stmt, rows)).scalars())
        await uow.execute(
            sa.update(payments)
            .where(payments.c.id.in_(payment_ids), payments.c.status == "pending")
            .values(updated=now)
        )
        await uow.commit()
    return written


async def _record(rt: Runtime, tenant_id: str, outcomes: list[Outcome]) -> None:
    """Write the attempts that ended without a result; a payment left unknown now names the
    gateway that may have charged it."""
    if not outcomes:
        return
    now = rt.clock.now()
    async with rt.uow() as uow:
        await uow.execute(
            sa.update(payment_attempts)
            .where(payment_attempts.c.id == sa.bindparam("_id"))
            .values(
                outcome=sa.bindparam("_outcome"),
                failure_code=sa.bindparam("_code"),
                failure_message=sa.bindparam("_message"),
                gateway_reference=sa.bindparam("_reference"),
                settled_at=sa.bindparam("_settled"),
            ),
            [
                {
                    "_id": o.attempt["id"],
                    "_outcome": o.error,
                    "_code": o.code,
                    "_message": (o.message or "")[:500] or None,
                    "_reference": o.reference,
                    "_settled": now if o.error == RETRIABLE else None,
                }
                for o in outcomes
            ],
        )
        unknown = [o for o in outcomes if o.error == UNKNOWN]
        if unknown:
            await uow.execute(
                sa.update(payments)
                .where(payments.c.tenant_id == tenant_id, payments.c.id == sa.bindparam("_id"))
                .values(gateway=sa.bindparam("_gateway"), updated=now),
                [{"_id": o.attempt["payment_id"], "_gateway": o.gateway} for o in unknown],
            )
        await uow.commit()


async def live_attempts(uow: UnitOfWork, payment_ids: Sequence[str]) -> dict[str, Any]:
    """The live attempt (outcome null or unknown) of each payment that has one."""
    if not payment_ids:
        return {}
    rows = await uow.fetch_all(
        sa.select(payment_attempts)
        .where(
            payment_attempts.c.payment_id.in_(list(payment_ids)),
            sa.or_(payment_attempts.c.outcome.is_(None), payment_attempts.c.outcome == UNKNOWN),
        )
        .order_by(payment_attempts.c.number)
    )
    return {row.payment_id: row for row in rows}


async def attempts_of(uow: UnitOfWork, tenant_id: str, payment_id: str) -> list[PaymentAttempt]:
    """The payment's attempts, in order."""
    rows = await uow.fetch_all(
        sa.select(payment_attempts)
        .where(
            payment_attempts.c.tenant_id == tenant_id, payment_attempts.c.payment_id == payment_id
        )
        .order_by(payment_attempts.c.number)
    )
    return [to_attempt(row) for row in rows]


def to_attempt(row: Any) -> PaymentAttempt:
    return PaymentAttempt(
        id=row.id,
        number=row.number,
        gateway=row.gateway,
        idempotency_key=row.idempotency_key,
        outcome=row.outcome,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        gateway_reference=row.gateway_reference,
        created=row.created,
        settled_at=row.settled_at,
    )


def candidate(
    router: Router,
    payment_id: str,
    amount: int,
    currency: str,
    card_brand: str | None,
    tokens: Mapping[str, str],
    next_number: int = 1,
) -> tuple[Candidate, routing.Route]:
    """A payment to charge along its route, and the route (its reason is kept on the payment).
    A manual payment method has its one token at the manual gateway (no card has one there)."""
    method = MANUAL_METHODS.get(tokens.get(MANUAL, ""), "card")
    route = router.route(payment_id, currency, amount, card_brand, method)
    c = Candidate(
        payment_id,
        amount,
        currency,
        router.routed(route.gateways),
        dict(tokens),
        next_number,
        skipped=[
            (name, f"not usable: {router.unusable.get(name) or 'not configured'}")
            for name in route.skipped
        ],
    )
    return c, route
