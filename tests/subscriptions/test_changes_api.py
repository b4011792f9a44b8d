"""Plan and quantity changes through the API, on test clocks: prorations on the next renewal,
invoiced now or not at all, changes scheduled for the period's end, and every refusal."""

from __future__ import annotations

from typing import Any

import pytest

from recur.subscriptions import changes
from recur.subscriptions import repository as repo
from recur.subscriptions.tables import plans as plans_table
from recur.verify import verify

APRIL = "2025-04-01T00:00:00Z"  # April has 30 days: a day is 1/30 of the period


async def _subscribe(billing, plan: dict[str, Any], **fields: Any) -> tuple[dict, dict, dict]:
    clock = await billing.clock(APRIL)
    customer = await billing.customer(test_clock_id=clock["id"])
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": plan["id"], **fields}
    )
    return clock, customer, sub


async def _change(billing, sub: dict, **body: Any) -> dict[str, Any]:
    return await billing.post(f"/v1/subscriptions/{sub['id']}/change", body)


async def _preview(billing, sub: dict, **params: Any) -> dict[str, Any]:
    return await billing.get(f"/v1/subscriptions/{sub['id']}/preview-change", **params)


def _lines(order: dict[str, Any]) -> list[tuple[str, int]]:
    return [(line["description"], line["amount"]) for line in order["lines"]]


async def _books_balance(runtime) -> None:
    """`recur verify` finds nothing wrong."""
    assert [f for f in await verify(runtime.db) if f.offenders] == []


async def _balance(billing, customer: dict) -> int:
    return (await billing.get(f"/v1/customers/{customer['id']}"))["balance"]


async def test_upgrade_with_create_prorations_bills_the_difference_on_the_next_renewal(
    billing,
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, _, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")  # 20 of 30 days left

    preview = await _preview(billing, sub, plan_id=pro["id"])
    expected = [
        ("Unused time on Basic after 2025-04-11 00:00 UTC", -2000),
        ("Remaining time on Pro after 2025-04-11 00:00 UTC", 4000),
    ]
    assert [(line["description"], line["amount"]) for line in preview["lines"]] == expected
    assert preview["total"] == 2000
    assert {(line["period_start"], line["period_end"]) for line in preview["lines"]} == {
        ("2025-04-11T00:00:00Z", "2025-05-01T00:00:00Z")
    }

    changed = await _change(billing, sub, plan_id=pro["id"])
    assert (changed["plan_id"], changed["quantity"]) == (pro["id"], 1)
    assert len(await billing.orders(sub["id"])) == 1  # nothing ordered now

    await billing.advance(clock, "2025-05-01T00:00:00Z")
    _, renewal = await billing.orders(sub["id"])
    assert _lines(renewal) == [("Pro (per month)", 6000), *expected]
    assert (renewal["subtotal"], renewal["total"], renewal["status"]) == (8000, 8000, "paid")
    # The items went on that order only.
    await billing.advance(clock, "2025-06-01T00:00:00Z")
    assert _lines((await billing.orders(sub["id"]))[-1]) == [("Pro (per month)", 6000)]


async def test_upgrade_with_always_invoice_orders_and_charges_now(billing, runtime) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, _, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    params = {"plan_id": pro["id"], "proration_behavior": "always_invoice"}
    preview = await _preview(billing, sub, **params)

    await _change(billing, sub, **params)
    _, invoice = await billing.orders(sub["id"])
    assert _lines(invoice) == [(line["description"], line["amount"]) for line in preview["lines"]]
    assert (invoice["total"], invoice["status"]) == (2000, "paid")
    assert invoice["period_start"] == "2025-04-11T00:00:00Z"
    payments = await billing.get("/v1/payments", order_id=invoice["id"])
    assert [(p["status"], p["amount"]) for p in payments["data"]] == [("succeeded", 2000)]

    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    assert _lines(renewal) == [("Pro (per month)", 6000)]
    await _books_balance(runtime)


async def test_a_change_without_proration_bills_nothing_until_the_renewal(billing) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, customer, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    preview = await _preview(billing, sub, plan_id=pro["id"], proration_behavior="none")
    assert (preview["lines"], preview["total"]) == ([], 0)

    await _change(billing, sub, plan_id=pro["id"], proration_behavior="none")
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    orders = await billing.orders(sub["id"])
    assert [_lines(o) for o in orders] == [
        [("Basic (per month)", 3000)],
        [("Pro (per month)", 6000)],
    ]
    assert await _balance(billing, customer) == 0


async def test_a_quantity_change_prorates_the_units(billing) -> None:
    seats = await billing.plan(product="Seats", amount=1000, pricing_model="per_unit")
    clock, _, sub = await _subscribe(billing, seats)
    await billing.advance(clock, "2025-04-16T00:00:00Z")  # half of April left

    changed = await _change(billing, sub, quantity=3)
    assert (changed["plan_id"], changed["quantity"]) == (seats["id"], 3)
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    assert _lines(renewal) == [
        ("Seats (per month)", 3000),
        ("Unused time on Seats after 2025-04-16 00:00 UTC", -500),
        ("Remaining time on 3 x Seats after 2025-04-16 00:00 UTC", 1500),
    ]
    assert renewal["total"] == 4000


async def test_a_downgrade_invoiced_now_credits_the_balance_and_charges_nothing(
    billing, runtime
) -> None:
    pro = await billing.plan(product="Pro", amount=6000)
    basic = await billing.plan(product="Basic", amount=3000)
    clock, customer, sub = await _subscribe(billing, pro)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    params = {"plan_id": basic["id"], "proration_behavior": "always_invoice"}
    assert (await _preview(billing, sub, **params))["total"] == -4000 + 2000

    await _change(billing, sub, **params)
    assert len(await billing.orders(sub["id"])) == 1
    assert await _balance(billing, customer) == 2000
    credits = await billing.get(f"/v1/customers/{customer['id']}/credits")
    assert [(c["type"], c["amount"]) for c in credits["data"]] == [("proration", 2000)]

    # The next renewal spends the credit before charging the card.
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    assert (renewal["total"], renewal["credit_applied"], renewal["status"]) == (3000, 2000, "paid")
    assert await _balance(billing, customer) == 0
    await _books_balance(runtime)


async def test_a_credit_beyond_the_renewal_order_goes_to_the_balance(billing, runtime) -> None:
    pro = await billing.plan(product="Pro", amount=6000)
    basic = await billing.plan(product="Basic", amount=1000)
    clock, customer, sub = await _subscribe(billing, pro)
    await billing.advance(clock, "2025-04-02T00:00:00Z")  # 29 of 30 days left

    await _change(billing, sub, plan_id=basic["id"])
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    # 6000 x 29/30 = 5800 back, 1000 x 29/30 = 966.67 -> 967 owed, and May's 1000.
    assert [line["amount"] for line in renewal["lines"]] == [1000, -5800, 967, 3833]
    assert (renewal["subtotal"], renewal["total"], renewal["status"]) == (0, 0, "paid")
    assert await _balance(billing, customer) == 3833
    # The balance pays June in full.
    await billing.advance(clock, "2025-06-01T00:00:00Z")
    assert (await billing.orders(sub["id"]))[-1]["credit_applied"] == 1000
    assert await _balance(billing, customer) == 2833
    await _books_balance(runtime)


async def test_a_percentage_coupon_for_ever_discounts_the_prorations_once(billing) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    coupon = await billing.post("/v1/coupons", {"percent_off": 50, "duration": "forever"})
    clock, _, sub = await _subscribe(billing, basic, coupon_id=coupon["id"])
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    # Paid 1500 for April; the renewal takes 50% off the credit too, so it is listed undiscounted.
    preview = await _preview(billing, sub, plan_id=pro["id"])
    assert [line["amount"] for line in preview["lines"]] == [-2000, 4000]
    await _change(billing, sub, plan_id=pro["id"])
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    assert (renewal["subtotal"], renewal["discount"]["amount"], renewal["total"]) == (
        8000,
        4000,
        4000,
    )


async def test_a_one_off_discount_is_not_credited_back(billing) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    coupon = await billing.post("/v1/coupons", {"percent_off": 50, "duration": "once"})
    clock, _, sub = await _subscribe(billing, basic, coupon_id=coupon["id"])
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    # 1500 paid for April: 2/3 of it back, and May's order has no discount.
    preview = await _preview(billing, sub, plan_id=pro["id"])
    assert [line["amount"] for line in preview["lines"]] == [-1000, 4000]
    await _change(billing, sub, plan_id=pro["id"])
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    assert (renewal["discount"], renewal["total"]) == (None, 9000)


async def test_a_downgrade_credits_the_tax_that_was_paid_on_it(billing, runtime) -> None:
    pro = await billing.plan(product="Pro", amount=6000)
    basic = await billing.plan(product="Basic", amount=3000)
    vat = await billing.post(
        "/v1/tax-rates", {"display_name": "VAT", "percentage": 20, "inclusive": False}
    )
    clock = await billing.clock(APRIL)
    customer = await billing.customer(test_clock_id=clock["id"])
    await billing.api.patch(f"/v1/customers/{customer['id']}", json={"tax_rate_ids": [vat["id"]]})
    sub = await billing.post(
        "/v1/subscriptions", {"customer_id": customer["id"], "plan_id": pro["id"]}
    )
    assert (await billing.orders(sub["id"]))[0]["total"] == 7200
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=basic["id"], proration_behavior="always_invoice")
    # -4000 + 2000 before tax: 2000 back, and the 400 of tax paid on it.
    assert await _balance(billing, customer) == 2400
    await _books_balance(runtime)


async def test_a_change_and_its_reverse_at_the_same_instant_cancel_out(billing) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=7000)
    clock, _, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-08T05:17:00Z")
    await _change(billing, sub, plan_id=pro["id"])
    await _change(billing, sub, plan_id=basic["id"])
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewal = (await billing.orders(sub["id"]))[-1]
    amounts = [line["amount"] for line in renewal["lines"]]
    assert len(amounts) == 5 and amounts[0] == 3000
    assert renewal["total"] == 3000  # what was paid for April stands, exactly


async def test_a_second_change_in_a_period_credits_what_the_first_one_charged(billing) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    team = await billing.plan(product="Team", amount=9000)
    clock, _, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    await _change(billing, sub, plan_id=pro["id"], proration_behavior="always_invoice")
    await billing.advance(clock, "2025-04-21T00:00:00Z")  # 10 of the 20 charged days left
    preview = await _preview(billing, sub, plan_id=team["id"], proration_behavior="always_invoice")
    assert [line["amount"] for line in preview["lines"]] == [-2000, 3000]
    await _change(billing, sub, plan_id=team["id"], proration_behavior="always_invoice")
    orders = await billing.orders(sub["id"])
    assert [o["total"] for o in orders] == [3000, 2000, 1000]
    assert all(o["status"] == "paid" for o in orders)


async def test_a_change_scheduled_for_period_end_applies_at_the_renewal(billing) -> None:
    basic = await billing.plan(product="Basic", amount=3000, pricing_model="per_unit")
    pro = await billing.plan(product="Pro", amount=6000, pricing_model="per_unit")
    clock, _, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    preview = await _preview(billing, sub, plan_id=pro["id"], effective="period_end")
    assert (preview["lines"], preview["total"]) == ([], 0)

    first = await _change(billing, sub, plan_id=pro["id"], effective="period_end")
    assert first["plan_id"] == basic["id"]
    assert first["pending_change"] == {
        "plan_id": pro["id"],
        "quantity": 1,
        "effective_at": "2025-05-01T00:00:00Z",
    }
    # A second scheduling replaces the first.
    second = await _change(billing, sub, quantity=2, effective="period_end")
    assert second["pending_change"]["plan_id"] == basic["id"]
    assert second["pending_change"]["quantity"] == 2
    assert second["quantity"] == 1

    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewed = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert (renewed["plan_id"], renewed["quantity"], renewed["pending_change"]) == (
        basic["id"],
        2,
        None,
    )
    assert _lines((await billing.orders(sub["id"]))[-1]) == [("Basic (per month)", 6000)]


async def test_a_scheduled_change_can_be_dropped(billing, api) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, _, sub = await _subscribe(billing, basic)
    await _change(billing, sub, plan_id=pro["id"], effective="period_end")
    response = await api.delete(f"/v1/subscriptions/{sub['id']}/pending-change")
    assert response.status_code == 200
    assert response.json()["pending_change"] is None
    again = await api.delete(f"/v1/subscriptions/{sub['id']}/pending-change")
    assert again.status_code == 409

    await billing.advance(clock, "2025-05-01T00:00:00Z")
    renewed = await billing.get(f"/v1/subscriptions/{sub['id']}")
    assert renewed["plan_id"] == basic["id"]
    assert _lines((await billing.orders(sub["id"]))[-1]) == [("Basic (per month)", 3000)]


async def test_a_trialing_subscription_changes_without_proration(billing) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=60000, interval="year")
    clock, _, sub = await _subscribe(billing, basic, trial_days=14)
    assert sub["status"] == "trialing"
    await billing.advance(clock, "2025-04-05T00:00:00Z")
    params = {"plan_id": pro["id"], "proration_behavior": "always_invoice"}
    assert (await _preview(billing, sub, **params))["lines"] == []

    changed = await _change(billing, sub, **params)
    assert (changed["plan_id"], changed["status"]) == (pro["id"], "trialing")
    assert await billing.orders(sub["id"]) == []
    # The first period, at the trial's end, is the new plan's (a year, here).
    await billing.advance(clock, "2025-04-15T00:00:00Z")
    (first,) = await billing.orders(sub["id"])
    assert _lines(first) == [("Pro (per year)", 60000)]
    assert first["period_end"] == "2026-04-15T00:00:00Z"


async def test_an_always_invoice_change_that_dies_before_its_order_is_billed_later(
    billing, monkeypatch
) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    clock, _, sub = await _subscribe(billing, basic)
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    settle = changes.settle_pending_invoice

    async def dies(*_args: Any) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(changes, "settle_pending_invoice", dies)
        await _change(billing, sub, plan_id=pro["id"], proration_behavior="always_invoice")
    assert len(await billing.orders(sub["id"])) == 1

    # The renewal settles it first (once), then renews without those items.
    await billing.advance(clock, "2025-05-01T00:00:00Z")
    _, invoice, renewal = await billing.orders(sub["id"])
    assert (invoice["total"], invoice["status"]) == (2000, "paid")
    assert _lines(renewal) == [("Pro (per month)", 6000)]
    assert changes.settle_pending_invoice is settle


async def _state(billing, sub: dict) -> tuple[Any, ...]:
    fresh = await billing.get(f"/v1/subscriptions/{sub['id']}")
    orders = await billing.orders(sub["id"])
    preview = await _preview(billing, sub, quantity=2)
    return fresh, [o["id"] for o in orders], preview


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "plan_id"),
        ({"plan_id": "plan_nope"}, 404, "plan_id"),
        ({"plan_id": "$other_tenant"}, 404, "plan_id"),
        ({"quantity": 0}, 400, "quantity"),
        ({"quantity": "2"}, 400, "quantity"),
        ({"quantity": 1}, 400, "quantity"),
        ({"plan_id": "$basic"}, 400, "plan_id"),
        ({"plan_id": "$basic", "quantity": 1}, 400, "plan_id"),
        ({"plan_id": "$euro"}, 400, "plan_id"),
        ({"plan_id": "$yearly"}, 400, "plan_id"),
        ({"plan_id": "$yearly", "effective": "period_end"}, 400, "plan_id"),
        ({"plan_id": "$inactive"}, 400, "plan_id"),
        ({"plan_id": "$pro", "proration_behavior": "later"}, 400, "proration_behavior"),
        ({"plan_id": "$pro", "effective": "tomorrow"}, 400, "effective"),
        ({"quantity": 10**18}, 400, "quantity"),
    ],
)
async def test_a_refused_change_is_a_clear_error_and_changes_nothing(
    billing, api, tenant, other_tenant, runtime, body, status, param
) -> None:
    plans = {
        "$basic": await billing.plan(product="Basic", amount=3000),
        "$pro": await billing.plan(product="Pro", amount=6000),
        "$euro": await billing.plan(product="Euro", currency="EUR"),
        "$yearly": await billing.plan(product="Yearly", interval="year"),
        "$inactive": await billing.plan(product="Retired"),
    }
    async with runtime.uow() as uow:
        await repo.update(uow, plans_table, tenant.id, plans["$inactive"]["id"], {"active": False})
        await uow.commit()
    product = await other_tenant.client.post("/v1/products", json={"name": "Theirs"})
    plan = {"product_id": product.json()["id"], "currency": "USD", "amount": 1, "interval": "month"}
    plans["$other_tenant"] = (await other_tenant.client.post("/v1/plans", json=plan)).json()
    clock, _, sub = await _subscribe(billing, plans["$basic"])
    await billing.advance(clock, "2025-04-11T00:00:00Z")
    before = await _state(billing, sub)
    if str(body.get("plan_id", "")).startswith("$"):
        body = {**body, "plan_id": plans[body["plan_id"]]["id"]}

    response = await api.post(f"/v1/subscriptions/{sub['id']}/change", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"]
    assert await _state(billing, sub) == before
    # The preview refuses the same change the same way.
    if not isinstance(body.get("quantity"), str):
        preview = await api.get(f"/v1/subscriptions/{sub['id']}/preview-change", params=body)
        assert (preview.status_code, preview.json()["error"]["param"]) == (status, param)


async def test_a_canceled_incomplete_or_paused_subscription_cannot_change(billing, api) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    _, _, canceled = await _subscribe(billing, basic)
    await billing.post(f"/v1/subscriptions/{canceled['id']}/cancel")
    _, _, paused = await _subscribe(billing, basic)
    await billing.post(f"/v1/subscriptions/{paused['id']}/pause")
    clock = await billing.clock(APRIL)
    no_card = await billing.customer(card=None, test_clock_id=clock["id"])
    incomplete = await billing.post(
        "/v1/subscriptions", {"customer_id": no_card["id"], "plan_id": basic["id"]}
    )
    assert incomplete["status"] == "incomplete"
    for sub in (canceled, paused, incomplete):
        before = await billing.get(f"/v1/subscriptions/{sub['id']}")
        for effective in ("immediately", "period_end"):
            body = {"plan_id": pro["id"], "effective": effective}
            response = await api.post(f"/v1/subscriptions/{sub['id']}/change", json=body)
            assert response.status_code == 409, (sub["status"], response.text)
        preview = await api.get(
            f"/v1/subscriptions/{sub['id']}/preview-change", params={"plan_id": pro["id"]}
        )
        assert preview.status_code == 409
        assert await billing.get(f"/v1/subscriptions/{sub['id']}") == before


async def test_another_tenants_subscription_is_404(billing, other_tenant) -> None:
    basic = await billing.plan(product="Basic", amount=3000)
    pro = await billing.plan(product="Pro", amount=6000)
    _, _, sub = await _subscribe(billing, basic)
    await _change(billing, sub, plan_id=pro["id"], effective="period_end")
    theirs = other_tenant.client
    path = f"/v1/subscriptions/{sub['id']}"
    responses = [
        await theirs.post(f"{path}/change", json={"plan_id": pro["id"]}),
        await theirs.get(f"{path}/preview-change", params={"plan_id": pro["id"]}),
        await theirs.delete(f"{path}/pending-change"),
    ]
    assert [r.status_code for r in responses] == [404, 404, 404]
    assert (await billing.get(path))["pending_change"]["plan_id"] == pro["id"]
