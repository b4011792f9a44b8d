"""The manual gateway: a payment awaits an operator, and lookup tells nothing until marked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recur.kit.clock import FrozenClock
from recur.payments.gateways import build_gateway
from recur.payments.gateways.base import (
    ChargeStatus,
    GatewayDecline,
    GatewayOutcomeUnknown,
    WebhookSignatureError,
)
from recur.payments.gateways.manual import (
    TOKEN_BANK_TRANSFER,
    TOKEN_CASH,
    OperatorMark,
    mark,
    settlement,
    transfer_reference,
)
from recur.payments.schemas import CardIn

NOW = datetime(2030, 6, 15, tzinfo=UTC)


async def test_a_charge_awaits_the_operator_with_a_reference_to_quote() -> None:
    marks: dict[str, OperatorMark] = {}

    async def read_mark(key: str) -> OperatorMark | None:
        return marks.get(key)

    clock = FrozenClock(NOW)
    gateway = build_gateway(
        "manual",
        {"instructions": "IBAN NL00 BANK 0123 4567 89, Recur BV"},
        clock=clock,
        operator_marks=read_mark,
    )
    with pytest.raises(GatewayOutcomeUnknown) as awaiting:
        await gateway.charge(TOKEN_BANK_TRANSFER, 5000, "EUR", idempotency_key="pay_M1")
    reference = awaiting.value.reference
    assert awaiting.value.code == "awaiting_operator"
    assert reference == transfer_reference("pay_M1")
    assert reference is not None and reference.startswith("RCR-") and len(reference) == 13
    assert "IBAN NL00" in awaiting.value.message and reference in awaiting.value.message
    assert transfer_reference("pay_M2") != reference

    lookup = await gateway.lookup_charge(
        "pay_M1", token=TOKEN_BANK_TRANSFER, amount=5000, currency="EUR"
    )
    assert (lookup.status, lookup.reference, lookup.result()) == (
        ChargeStatus.UNKNOWN,
        reference,
        None,
    )

    marks["pay_M1"] = mark("pay_M1", paid=True, by="ops@acme", clock=clock, reference="BANK-991")
    assert marks["pay_M1"].marked_at == NOW
    lookup = await gateway.lookup_charge(
        "pay_M1", token=TOKEN_BANK_TRANSFER, amount=5000, currency="EUR"
    )
    assert (lookup.status, lookup.reference) == (ChargeStatus.SUCCEEDED, "BANK-991")
    assert lookup.result() == settlement(marks["pay_M1"])

    marks["pay_M2"] = mark("pay_M2", paid=False, by="ops@acme", clock=clock)
    failed = await gateway.lookup_charge("pay_M2", token=TOKEN_CASH, amount=100, currency="EUR")
    assert (failed.status, failed.failure_code, failed.reference) == (
        ChargeStatus.FAILED,
        "not_received",
        transfer_reference("pay_M2"),
    )


async def test_no_cards_no_webhooks_and_refunds_given_back_by_the_operator() -> None:
    gateway = build_gateway("manual", {}, clock=FrozenClock(NOW))
    with pytest.raises(GatewayDecline) as refused:
        await gateway.tokenize(CardIn(number="4242424242424242", exp_month=1, exp_year=2040))
    assert refused.value.code == "card_not_supported"
    result = await gateway.charge("tok_sandbox_ok_x", 100, "EUR", idempotency_key="pay_1")
    assert (result.succeeded, result.failure_code) == (False, "invalid_token")
    # Without a way to read marks, nothing is ever known.
    lookup = await gateway.lookup_charge("pay_1", token=TOKEN_CASH, amount=100, currency="EUR")
    assert lookup.status == ChargeStatus.UNKNOWN
    refund = await gateway.refund("RCR-AAAA-BBBB", 100, "EUR", idempotency_key="re_1")
    assert refund.succeeded and refund.reference
    assert refund == await gateway.refund("RCR-AAAA-BBBB", 100, "EUR", idempotency_key="re_1")
    with pytest.raises(WebhookSignatureError):
        gateway.parse_webhook({}, b"{}")
