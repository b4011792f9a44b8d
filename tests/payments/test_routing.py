"""Routing a payment to gateways: the pure decision (Hypothesis), and the service's route with
the tenant's rules and decrypted credentials, configured through the API."""

from __future__ import annotations

import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from recur.payments import attempts, gateway_config
from recur.payments.gateway_config_schemas import GatewayCreate
from recur.payments.routing import (
    Conditions,
    PaymentFacts,
    Rule,
    Share,
    choose_route,
    describe,
    draw_for,
    matches,
    pick_share,
)
from recur.payments.tables import payment_gateways
from recur.runtime import Runtime, build_runtime
from recur.settings import Settings

NAMES = ["sandbox", "stripe", "adyen", "manual"]
ALL_USABLE: dict[str, str | None] = dict.fromkeys(NAMES)
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
STRIPE = {"api_key": "sk_test_RoUtInGsTrIpEkEy0001", "webhook_secret": "whsec_RoUtInGwHsEcReT01"}
ADYEN = {"api_key": "AQE_RoUtInGaDyEnKeY_0002", "merchant_account": "AcmeECOM", "hmac_key": "0A1B"}

# Pure routing


@st.composite
def splits(draw: st.DrawFn) -> tuple[Share, ...]:
    """2 to 4 distinct gateways with whole percents of at least 1, summing to 100."""
    count = draw(st.integers(2, 4))
    gateways = draw(st.permutations(NAMES))[:count]
    cuts = sorted(
        draw(st.lists(st.integers(1, 99), min_size=count - 1, max_size=count - 1, unique=True))
    )
    bounds = [0, *cuts, 100]
    return tuple(Share(g, bounds[i + 1] - bounds[i]) for i, g in enumerate(gateways))


@given(splits())
@hypothesis_settings(deadline=None)
@example((Share("stripe", 99), Share("adyen", 1)))
@example((Share("stripe", 1), Share("adyen", 1), Share("manual", 98)))
def test_evenly_spread_draws_hit_each_share_exactly_in_proportion(split) -> None:
    # 1,000 draws spread evenly over [0, 1): each share gets exactly its percent of them.
    n = 1_000
    counts = Counter(pick_share(split, (i + 0.5) / n) for i in range(n))
    assert {split[i].gateway: c for i, c in counts.items()} == {
        share.gateway: share.percent * n // 100 for share in split
    }


# The draws of 20,000 payment ids.
PAYMENT_DRAWS = [draw_for(f"pay_{i:06d}") for i in range(20_000)]


@given(splits())
@hypothesis_settings(max_examples=50, deadline=None)
def test_payment_ids_spread_over_a_split_in_proportion(split) -> None:
    # Each share within 1.5 points of its percent (a share's standard deviation is at most
    # 0.36 points).
    counts = Counter(pick_share(split, draw) for draw in PAYMENT_DRAWS)
    for index, share in enumerate(split):
        assert abs(counts[index] * 100 / len(PAYMENT_DRAWS) - share.percent) < 1.5


@given(st.text(max_size=40))
def test_the_draw_of_a_payment_is_fixed_and_in_range(key) -> None:
    assert 0.0 <= draw_for(key) < 1.0
    assert draw_for(key) == draw_for(key)


def test_draws_differ_between_payments() -> None:
    assert len({draw_for(f"pay_{i}") for i in range(1000)}) == 1000


@given(splits(), st.floats(0, 1, exclude_max=True))
def test_a_split_route_is_the_drawn_gateway_then_the_others(split, draw) -> None:
    route = choose_route([Rule("rr_y", 1, split=split)], PaymentFacts("USD", 1), draw, ALL_USABLE)
    chosen = split[pick_share(split, draw)].gateway
    assert route.gateways[0] == chosen
    assert route.gateways[1:] == tuple(s.gateway for s in split if s.gateway != chosen)
    assert route.rule_id == "rr_y"


def test_share_boundaries() -> None:
    split = (Share("stripe", 70), Share("adyen", 30))
    assert pick_share(split, 0.0) == 0
    assert pick_share(split, 0.6999999) == 0
    assert pick_share(split, 0.7) == 1
    assert pick_share(split, 0.9999999) == 1
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="draw"):
            pick_share(split, bad)


conditions = st.builds(
    Conditions,
    currency=st.sampled_from([None, "USD", "EUR"]),
    amount_min=st.one_of(st.none(), st.integers(0, 3000)),
    amount_max=st.one_of(st.none(), st.integers(0, 3000)),
    card_brand=st.sampled_from([None, "visa", "mastercard"]),
)
rules = st.lists(
    st.builds(
        Rule,
        id=st.from_regex(r"rr_[0-9A-Z]{4}", fullmatch=True),
        priority=st.integers(0, 5),
        conditions=conditions,
        gateways=st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True).map(tuple),
    ),
    max_size=8,
    unique_by=lambda rule: rule.id,
)
payments = st.builds(
    PaymentFacts,
    currency=st.sampled_from(["USD", "EUR", "GBP"]),
    amount=st.integers(1, 3000),
    card_brand=st.sampled_from([None, "visa", "mastercard", "amex"]),
)


@given(rules, payments, st.randoms(use_true_random=False))
def test_the_first_matching_rule_by_priority_wins(rule_list, payment, rnd) -> None:
    matching = [r for r in rule_list if matches(r.conditions, payment)]
    route = choose_route(rule_list, payment, 0.5, ALL_USABLE)
    if not matching:
        assert route.rule_id is None and route.gateways == ("sandbox",)
        assert route.reason == "no rule matched: default sandbox"
        return
    winner = min(matching, key=lambda r: (r.priority, r.id))
    assert route.rule_id == winner.id
    assert route.gateways == winner.gateways
    assert route.reason.startswith(f"rule {winner.id}: ")
    # Whatever order the rules are handed in.
    shuffled = list(rule_list)
    rnd.shuffle(shuffled)
    assert choose_route(shuffled, payment, 0.5, ALL_USABLE) == route


@given(conditions, payments)
def test_conditions_each_must_hold_and_bounds_are_inclusive(cond, payment) -> None:
    expected = (
        cond.currency in (None, payment.currency)
        and (cond.amount_min is None or cond.amount_min <= payment.amount)
        and (cond.amount_max is None or payment.amount <= cond.amount_max)
        and cond.card_brand in (None, payment.card_brand)
    )
    assert matches(cond, payment) is expected


def test_amount_bounds_at_the_edges() -> None:
    cond = Conditions(amount_min=1000, amount_max=5000)
    assert [matches(cond, PaymentFacts("EUR", a)) for a in (999, 1000, 5000, 5001)] == [
        False,
        True,
        True,
        False,
    ]
    # A rule naming a brand never matches a payment without a card.
    assert not matches(Conditions(card_brand="visa"), PaymentFacts("EUR", 1, None))
    assert matches(Conditions(), PaymentFacts("EUR", 1, None))


@given(
    st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True),
    st.dictionaries(st.sampled_from(NAMES), st.sampled_from([None, "disabled"])),
)
def test_unusable_gateways_are_skipped_keeping_the_order(gateways, unusable) -> None:
    route = choose_route(
        [Rule("rr_x", 1, gateways=tuple(gateways))], PaymentFacts("EUR", 1), 0.1, unusable
    )
    assert route.gateways == tuple(g for g in gateways if g in unusable and unusable[g] is None)
    assert route.skipped == tuple(g for g in gateways if g not in route.gateways)
    for name in route.skipped:
        why = unusable.get(name) or "not configured"
        assert f"{name} ({why})" in route.reason


def test_reasons_in_words() -> None:
    facts = PaymentFacts("EUR", 1500, "visa")
    ordered = Rule(
        "rr_x",
        1,
        Conditions(currency="EUR", amount_min=1000, amount_max=5000),
        gateways=("adyen", "stripe"),
    )
    assert choose_route([ordered], facts, 0.42, ALL_USABLE).reason == (
        "rule rr_x: currency EUR, amount 1000-5000 -> adyen then stripe"
    )
    split = Rule(
        "rr_y", 1, Conditions(card_brand="visa"), split=(Share("stripe", 70), Share("adyen", 30))
    )
    route = choose_route([split], facts, 0.42, ALL_USABLE)
    assert route.reason == "rule rr_y: card visa -> split 70% stripe (drew 0.42), then adyen"
    assert route.gateways == ("stripe", "adyen")
    route = choose_route([split], facts, 0.85, {"stripe": "disabled", "adyen": None})
    assert route.reason == (
        "rule rr_y: card visa -> split 30% adyen (drew 0.85), then stripe;"
        " skipped stripe (disabled)"
    )
    assert route.gateways == ("adyen",)
    route = choose_route([ordered], PaymentFacts("USD", 1500), 0.1, {"sandbox": None})
    assert route.reason == "no rule matched: default sandbox"
    route = choose_route([], facts, 0.1, {"sandbox": "disabled"})
    assert route.gateways == ()
    assert route.reason == (
        "no rule matched: default sandbox; skipped sandbox (disabled); no gateway left to try"
    )
    assert describe(Conditions(amount_min=5)) == "amount >= 5"
    assert describe(Conditions(amount_max=5)) == "amount <= 5"
    assert describe(Conditions()) == "any payment"


# The service's route, from rules and gateways configured through the API


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        scheduler_enabled=False,
        rate_limit_per_second=1000,
        rate_limit_burst=1000,
        gateway_credentials_key=NEW_KEY,
    )


def _settings_with_key(database_url: str, key: str | None) -> Settings:
    return Settings(database_url=database_url, scheduler_enabled=False, gateway_credentials_key=key)


async def _post(api, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def _route(rt: Runtime, tenant_id: str, *, payment_id: str = "pay_1", **facts: Any):
    """The route a payment takes, with its gateways' credentials, as payments reads it."""
    facts = {"currency": "EUR", "amount": 1000, "card_brand": "visa", **facts}
    router = await attempts.load_router(rt, tenant_id)
    route = router.route(payment_id, facts["currency"], facts["amount"], facts["card_brand"])
    return SimpleNamespace(
        gateways=tuple(router.routed(route.gateways)), reason=route.reason, rule_id=route.rule_id
    )


def _plain(route) -> list[tuple[str, dict[str, str]]]:
    return [(g.name, g.credentials) for g in route.gateways]


async def test_route_follows_the_tenants_rules_with_decrypted_credentials(
    api, runtime, tenant, other_tenant, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    stripe = await _post(api, "/v1/gateways", {"name": "stripe", "credentials": STRIPE})
    await _post(api, "/v1/gateways", {"name": "adyen", "credentials": ADYEN})
    eur = await _post(
        api,
        "/v1/routing-rules",
        {
            "priority": 10,
            "conditions": {"currency": "EUR", "amount_min": 1000, "amount_max": 5000},
            "gateways": ["adyen", "stripe"],
        },
    )
    visa = await _post(
        api,
        "/v1/routing-rules",
        {
            "priority": 20,
            "conditions": {"card_brand": "visa"},
            "split": [{"gateway": "stripe", "percent": 70}, {"gateway": "sandbox", "percent": 30}],
        },
    )

    route = await _route(runtime, tenant.id, amount=1000)
    assert route.rule_id == eur["id"]
    assert _plain(route) == [("adyen", ADYEN), ("stripe", STRIPE)]
    assert route.reason == f"rule {eur['id']}: currency EUR, amount 1000-5000 -> adyen then stripe"
    # The credentials never show in the route's repr (a log line of it, say).
    for secret in (STRIPE["api_key"], ADYEN["api_key"], ADYEN["hmac_key"]):
        assert secret not in repr(route)

    # Above the EUR rule's range: the visa split, the same draw for the same payment.
    routes = [await _route(runtime, tenant.id, amount=5001, payment_id="pay_A") for _ in range(3)]
    assert routes[0] == routes[1] == routes[2]
    assert routes[0].rule_id == visa["id"]
    drew = draw_for("pay_A")
    first = "stripe" if drew < 0.7 else "sandbox"
    assert [g.name for g in routes[0].gateways] == [
        first,
        {"stripe": "sandbox", "sandbox": "stripe"}[first],
    ]
    assert f"(drew {drew:.2f})" in routes[0].reason
    # Over many payments, the split holds.
    firsts = Counter(
        [
            (await _route(runtime, tenant.id, amount=9000, payment_id=f"pay_{i}")).gateways[0].name
            for i in range(400)
        ]
    )
    assert 0.6 < firsts["stripe"] / 400 < 0.8

    # No rule matches a mastercard in USD: the sandbox.
    route = await _route(runtime, tenant.id, currency="USD", card_brand="mastercard")
    assert _plain(route) == [("sandbox", {})] and route.rule_id is None
    assert route.reason == "no rule matched: default sandbox"

    # A disabled gateway is skipped, said in the reason.
    await _post(api, f"/v1/gateways/{stripe['id']}", {"enabled": False})
    route = await _route(runtime, tenant.id)
    assert _plain(route) == [("adyen", ADYEN)]
    assert route.reason.endswith("; skipped stripe (disabled)")

    # The other tenant has none of this.
    route = await _route(runtime, other_tenant.id)
    assert _plain(route) == [("sandbox", {})] and route.rule_id is None
    for secret in (STRIPE["api_key"], STRIPE["webhook_secret"], ADYEN["api_key"]):
        assert secret not in caplog.text


async def test_a_disabled_sandbox_leaves_no_default(api, runtime, tenant) -> None:
    sandbox = await _post(api, "/v1/gateways", {"name": "sandbox", "enabled": False})
    route = await _route(runtime, tenant.id)
    assert route.gateways == ()
    assert route.reason.endswith("skipped sandbox (disabled); no gateway left to try")
    await _post(api, f"/v1/gateways/{sandbox['id']}", {"enabled": True})
    assert _plain(await _route(runtime, tenant.id)) == [("sandbox", {})]


async def test_key_rotation_old_keys_still_decrypt(api, tenant, database_url) -> None:
    # Stored under the first key; the server then gets a new key first and keeps the old one.
    rt_old = build_runtime(_settings_with_key(database_url, OLD_KEY))
    try:
        await gateway_config.create_gateway(
            rt_old, tenant.id, GatewayCreate(name="stripe", credentials=STRIPE)
        )
    finally:
        await rt_old.close()
    await _post(api, "/v1/routing-rules", {"priority": 1, "gateways": ["stripe", "sandbox"]})

    async def token() -> str:
        rt = build_runtime(_settings_with_key(database_url, None))
        try:
            async with rt.uow() as uow:
                return str((await uow.fetch_one(sa.select(payment_gateways))).credentials_encrypted)
        finally:
            await rt.close()

    before = await token()
    assert Fernet(OLD_KEY).decrypt(before.encode())

    # Only the new key: the old token is unreadable, skipped with the reason given.
    rt_new = build_runtime(_settings_with_key(database_url, NEW_KEY))
    try:
        route = await _route(rt_new, tenant.id)
        assert _plain(route) == [("sandbox", {})]
        assert "skipped stripe (credentials unreadable)" in route.reason
    finally:
        await rt_new.close()

    # New first, old kept: the old token still decrypts; rotation moves it to the new key.
    rotating = build_runtime(_settings_with_key(database_url, f"{NEW_KEY},{OLD_KEY}"))
    try:
        assert _plain(await _route(rotating, tenant.id)) == [("stripe", STRIPE), ("sandbox", {})]
        assert await gateway_config.rotate_credentials(rotating) == (1, 0)
    finally:
        await rotating.close()
    after = await token()
    assert after != before and STRIPE["api_key"] not in after
    rt_new = build_runtime(_settings_with_key(database_url, NEW_KEY))
    try:
        assert _plain(await _route(rt_new, tenant.id)) == [("stripe", STRIPE), ("sandbox", {})]
    finally:
        await rt_new.close()


async def test_a_token_moved_to_another_tenant_opens_nothing(
    api, runtime, tenant, other_tenant
) -> None:
    await _post(api, "/v1/gateways", {"name": "stripe", "credentials": STRIPE})
    await _post(
        other_tenant.client,
        "/v1/gateways",
        {"name": "stripe", "credentials": {**STRIPE, "api_key": "sk_test_othertenant0000"}},
    )
    await _post(other_tenant.client, "/v1/routing-rules", {"priority": 1, "gateways": ["stripe"]})
    async with runtime.uow() as uow:
        mine = await uow.fetch_one(
            sa.select(payment_gateways).where(payment_gateways.c.tenant_id == tenant.id)
        )
        await uow.execute(
            sa.update(payment_gateways)
            .where(payment_gateways.c.tenant_id == other_tenant.id)
            .values(credentials_encrypted=mine.credentials_encrypted)
        )
        await uow.commit()
    route = await _route(runtime, other_tenant.id)
    assert route.gateways == ()
    assert "skipped stripe (credentials unreadable)" in route.reason
