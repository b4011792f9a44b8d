"""The fault test: payments through a sandbox that times out on 30% of charges and fails 10%,
then the reconciler. No order is charged twice, every payment is settled, the books are clean."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from recur.bench_payments import fault_run
from recur.kit.clock import FrozenClock
from recur.payments import attempts
from recur.payments.breaker import BREAKERS, GatewayBreakers
from recur.payments.gateways.base import WebhookKind
from recur.payments.gateways.sandbox import signed_webhook
from recur.payments.reconcile import reconcile
from recur.payments.tables import payment_attempts, payments
from recur.subscriptions.billing import LEASE
from recur.verify import verify

from ..subscriptions.conftest import BillingDriver


@pytest.fixture(autouse=True)
def fresh_breakers(monkeypatch) -> None:
    # A breaker that never opens here: this test is about outcomes, not about skipping.
    monkeypatch.setattr(attempts, "BREAKERS", GatewayBreakers(failures_to_open=10_000))
    BREAKERS.reset()


async def test_no_order_is_charged_twice_and_every_payment_settles(runtime) -> None:
    report = await fault_run(runtime, 60)
    assert report.payments == 60
    assert report.timeouts_seen > 0  # the faults happened
    assert report.reconciled.asked > 0
    assert report.max_charges_per_order == 1
    assert report.orders_charged_twice == 0
    assert report.succeeded_without_charge == 0
    assert report.pending_left == 0
    assert report.succeeded + report.failed == 60
    assert report.verify_failures == []
    async with runtime.uow() as uow:
        live = (
            await uow.execute(
                sa.select(sa.func.count()).where(
                    sa.or_(
                        payment_attempts.c.outcome.is_(None),
                        payment_attempts.c.outcome == "unknown",
                    )
                )
            )
        ).scalar_one()
        failed_codes = set(
            (
                await uow.execute(
                    sa.select(payments.c.failure_code).where(payments.c.status == "failed")
                )
            ).scalars()
        )
    assert live == 0
    # A retriable failure at the only gateway fails the payment; nothing else fails here.
    assert failed_codes <= {"gateways_unavailable"}


async def test_an_unknown_outcome_waits_for_the_reconciler(
    runtime, api, tenant, make_customer, attach, make_order
) -> None:
    configured = await api.post(
        "/v1/gateways",
        json={
            "name": "sandbox",
            "credentials": {"faults": {"timeout_share": 1.0, "charged_on_timeout_share": 1.0}},
        },
    )
    assert configured.status_code == 200, configured.text
    customer = await make_customer()
    assert (await attach(customer["id"])).status_code == 200
    order = await make_order(customer["id"], 900)
    response = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert response.status_code == 200, response.text
    payment = response.json()
    assert payment["status"] == "pending"
    # Asked again, the order is being paid: nothing is charged twice.
    again = await api.post("/v1/payments", json={"order_id": order["id"]})
    assert again.status_code == 409
    # Too soon for the reconciler: left alone.
    assert (await reconcile(runtime)).asked == 0
    result = await reconcile(runtime, unknown_after=timedelta(0))
    assert (result.asked, result.succeeded) == (1, 1)
    fetched = (await api.get(f"/v1/payments/{payment['id']}")).json()
    assert fetched["status"] == "succeeded"
    assert [(a["outcome"], a["idempotency_key"]) for a in fetched["attempts"]] == [
        ("succeeded", f"{payment['id']}-1")
    ]
    assert (await api.get(f"/v1/orders/{order['id']}")).json()["status"] == "paid"
    assert all(f.ok for f in await verify(runtime.db))


async def test_a_charge_that_never_arrived_is_sent_again_under_a_new_key(
    runtime, api, make_customer, attach
) -> None:
    await api.post(
        "/v1/gateways",
        json={
            "name": "sandbox",
            "credentials": {"faults": {"timeout_share": 1.0, "charged_on_timeout_share": 0.0}},
        },
    )
    customer = await make_customer()
    assert (await attach(customer["id"])).status_code == 200
    body = {"customer_id": customer["id"], "amount": 500, "currency": "USD"}
    payment = (await api.post("/v1/payments", json=body)).json()
    assert payment["status"] == "pending"
    # Lost, every time (the sandbox's fate is per key): each run closes one attempt as never
    # arrived and leaves the next one unknown; never two live attempts.
    for _ in range(2):
        await reconcile(runtime, unknown_after=timedelta(0))
    fetched = (await api.get(f"/v1/payments/{payment['id']}")).json()
    assert fetched["status"] == "pending"
    outcomes = [(a["number"], a["outcome"], a["failure_code"]) for a in fetched["attempts"]]
    assert outcomes == [
        (1, "retriable_error", "not_found"),
        (2, "retriable_error", "not_found"),
        (3, "unknown", "timeout"),
    ]


async def _renewal_pending(billing: BillingDriver, **credentials: Any) -> tuple[dict, dict, dict]:
    """A paid subscription whose renewal charge, with a card declined at charge, is pending:
    the sandbox (with `credentials`) declined it and lost its answer. (clock, subscription,
    renewal order)"""
    clock, _, sub = await billing.renewal_will_fail()
    faults = {"timeout_share": 1.0, "charged_on_timeout_share": 1.0}
    await billing.post(
        "/v1/gateways", {"name": "sandbox", "credentials": {"faults": faults, **credentials}}
    )
    await billing.advance(clock, "2025-02-01T00:00:00Z")
    first, renewal = await billing.orders(sub["id"])
    assert (first["status"], renewal["status"]) == ("paid", "open")
    page = await billing.get("/v1/payments", order_id=renewal["id"])
    assert [p["status"] for p in page["data"]] == ["pending"]
    # Not known to have failed yet: no dunning.
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "active"
    return clock, sub, renewal


async def _learns_it_failed_and_dunning_retries(
    billing: BillingDriver, runtime: Any, monkeypatch: Any, clock: dict, sub: dict, renewal: dict
) -> None:
    # The bill run's next look at the period, once the lease of the run that charged it is
    # over, learns from dunning that the charge failed, and charges nothing more: dunning
    # retries on its schedule.
    later = FrozenClock(runtime.clock.now() + LEASE)
    monkeypatch.setattr(runtime, "clock", later)
    await billing.advance(clock, "2025-02-01T00:01:00Z")
    assert (await billing.get(f"/v1/subscriptions/{sub['id']}"))["status"] == "past_due"
    page = await billing.get("/v1/payments", order_id=renewal["id"])
    assert [p["status"] for p in page["data"]] == ["failed"]
    # Dunning's first retry, a day after the failure, charges the order again.
    await billing.advance(clock, "2025-02-02T00:00:00Z")
    page = await billing.get("/v1/payments", order_id=renewal["id"])
    assert sorted(p["status"] for p in page["data"]) == ["failed", "pending"]


async def test_a_renewal_found_declined_by_the_reconciler_goes_to_dunning(
    runtime, api, monkeypatch
) -> None:
    billing = BillingDriver(api)
    clock, sub, renewal = await _renewal_pending(billing)
    result = await reconcile(runtime, unknown_after=timedelta(0))
    assert (result.asked, result.failed) == (1, 1)
    await _learns_it_failed_and_dunning_retries(billing, runtime, monkeypatch, clock, sub, renewal)


async def test_a_renewal_failed_by_the_gateways_webhook_goes_to_dunning(
    runtime, api, monkeypatch
) -> None:
    billing = BillingDriver(api)
    secret = "whsec_sandbox_tenant"
    clock, sub, renewal = await _renewal_pending(billing, webhook_secret=secret)
    [payment] = (await billing.get("/v1/payments", order_id=renewal["id"]))["data"]
    headers, body = signed_webhook(
        secret,
        "evt_renewal_failed",
        WebhookKind.CHARGE_FAILED,
        runtime.clock.now(),
        idempotency_key=f"{payment['id']}-1",
        amount=1000,
        currency="usd",
        failure_code="card_declined",
    )
    response = await api.post("/v1/gateways/sandbox/webhooks", content=body, headers=headers)
    assert response.status_code == 200, response.text
    failed = await billing.get(f"/v1/payments/{payment['id']}")
    assert (failed["status"], failed["failure_code"]) == ("failed", "card_declined")
    await _learns_it_failed_and_dunning_retries(billing, runtime, monkeypatch, clock, sub, renewal)


async def test_a_charge_at_a_gateway_disabled_since_is_still_asked_about(
    runtime, api, make_customer, attach
) -> None:
    faults = {"timeout_share": 1.0, "charged_on_timeout_share": 1.0}
    configured = await api.post(
        "/v1/gateways", json={"name": "sandbox", "credentials": {"faults": faults}}
    )
    assert configured.status_code == 200, configured.text
    customer = await make_customer()
    assert (await attach(customer["id"])).status_code == 200
    body = {"customer_id": customer["id"], "amount": 700, "currency": "USD"}
    payment = (await api.post("/v1/payments", json=body)).json()
    assert payment["status"] == "pending"
    # The tenant turns the gateway off: no new payment goes there, this one is still settled.
    disabled = await api.post(f"/v1/gateways/{configured.json()['id']}", json={"enabled": False})
    assert disabled.status_code == 200, disabled.text
    result = await reconcile(runtime, unknown_after=timedelta(0))
    assert (result.asked, result.succeeded, result.left_pending) == (1, 1, 0)
    assert (await api.get(f"/v1/payments/{payment['id']}")).json()["status"] == "succeeded"
