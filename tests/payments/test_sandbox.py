"""The sandbox gateway on its own: brands, Luhn, test cards, tokens that hold no card number."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from recur.kit.clock import FrozenClock
from recur.payments.gateways.base import GatewayDecline
from recur.payments.gateways.sandbox import (
    SandboxGateway,
    card_brand,
    luhn_valid,
    normalize_number,
)
from recur.payments.schemas import CardIn


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("4000056655665556", "visa"),
        ("5555555555554444", "mastercard"),
        ("5105105105105100", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("2221000000000009", "mastercard"),
        ("2720990000000007", "mastercard"),
        ("378282246310005", "amex"),
        ("371449635398431", "amex"),
        ("6011111111111117", "discover"),
        ("6500000000000002", "discover"),
        ("3566002020360505", "jcb"),
        ("3528000000000007", "jcb"),
        ("3589000000000003", "jcb"),
        ("3056930009020004", "diners"),
        ("36227206271667", "diners"),
        ("38520000023237", "diners"),
        ("30000000000004", "diners"),
        ("6200000000000005", "unknown"),  # UnionPay: not a brand Recur names yet
        ("2220990000000006", "unknown"),
        ("2721000000000004", "unknown"),
        ("3527000000000008", "unknown"),
        ("3060000000000009", "unknown"),
        ("5600000000000000", "unknown"),
        ("1234567812345670", "unknown"),
    ],
)
def test_brand_from_leading_digits(number: str, brand: str) -> None:
    assert card_brand(number) == brand


def test_brand_of_short_or_odd_input_is_unknown() -> None:
    assert card_brand("") == "unknown"
    assert card_brand("3") == "unknown"
    assert card_brand("4") == "visa"


@pytest.mark.parametrize(
    "number",
    ["4242424242424242", "4000000000000002", "378282246310005", "36227206271667", "79927398713"],
)
def test_luhn_accepts_valid_numbers(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize(
    "number",
    ["4242424242424241", "4242424242424243", "79927398710", "42424242x4242424", "\u0664\u0662"],
)
def test_luhn_refuses_invalid_numbers(number: str) -> None:
    assert not luhn_valid(number)


def test_normalize_number() -> None:
    assert normalize_number("4242 4242 4242 4242") == "4242424242424242"
    assert normalize_number("4242-4242-4242-4242") == "4242424242424242"
    assert normalize_number("4242.4242.4242.4242") is None
    assert normalize_number("\uff14" * 16) is None  # full-width digits are no card
    assert normalize_number("42424242424") is None  # 11 digits
    assert normalize_number("42424242424242424242") is None  # 20 digits


def _card(number: str, exp_month: int = 12, exp_year: int = 2040) -> CardIn:
    return CardIn(number=number, exp_month=exp_month, exp_year=exp_year, cvc="123")


def _gateway() -> SandboxGateway:
    return SandboxGateway(FrozenClock(datetime(2030, 6, 15, tzinfo=UTC)))


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("4000000000000002", "card_declined"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000119", "processing_error"),
        ("4242424242424241", "incorrect_number"),
        ("4242 4242 4242 424x", "incorrect_number"),
    ],
)
async def test_cards_refused_at_tokenize(number: str, code: str) -> None:
    with pytest.raises(GatewayDecline) as declined:
        await _gateway().tokenize(_card(number))
    assert declined.value.code == code
    assert number not in declined.value.message
    assert number.replace(" ", "") not in str(declined.value)


async def test_expiry_is_judged_by_the_clock() -> None:
    gateway = _gateway()  # June 2030
    assert (await gateway.tokenize(_card("4242424242424242", 6, 2030))).exp_month == 6
    for month, year in ((5, 2030), (12, 2029)):
        with pytest.raises(GatewayDecline) as declined:
            await gateway.tokenize(_card("4242424242424242", month, year))
        assert declined.value.code == "expired_card"


async def test_non_numeric_cvc_is_refused() -> None:
    card = CardIn(number="4242424242424242", exp_month=12, exp_year=2040, cvc="12a")
    with pytest.raises(GatewayDecline) as declined:
        await _gateway().tokenize(card)
    assert declined.value.code == "invalid_cvc"


@pytest.mark.parametrize(
    ("number", "succeeds", "brand"),
    [
        ("4242424242424242", True, "visa"),
        ("4000000000000341", False, "visa"),
        ("5555555555554444", True, "mastercard"),
        ("6011111111111117", True, "discover"),
    ],
)
async def test_tokens_carry_the_outcome_and_never_the_number(
    number: str, succeeds: bool, brand: str
) -> None:
    gateway = _gateway()
    card = await gateway.tokenize(_card(number))
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == (brand, number[-4:], 12, 2040)
    assert card.token.startswith("tok_sandbox_")
    assert number not in card.token and number[-4:] not in card.token
    assert card.token != (await gateway.tokenize(_card(number))).token  # random bits

    result = await gateway.charge(card.token, 1000, "USD", idempotency_key="pay_1")
    assert result.succeeded is succeeds
    assert result.reference is not None and result.reference.startswith("ch_sandbox_")
    assert result.failure_code == (None if succeeds else "card_declined")
    again = await gateway.charge(card.token, 1000, "USD", idempotency_key="pay_1")
    assert again == result  # same idempotency key, same charge


async def test_unknown_token_and_reference_fail() -> None:
    gateway = _gateway()
    result = await gateway.charge("tok_other_x", 100, "USD", idempotency_key="pay_2")
    assert (result.succeeded, result.failure_code) == (False, "invalid_token")
    refund = await gateway.refund("ch_other", 100, "USD", idempotency_key="re_1")
    assert (refund.succeeded, refund.failure_code) == (False, "invalid_charge")


async def test_refund_reference_follows_the_idempotency_key() -> None:
    gateway = _gateway()
    first = await gateway.refund("ch_sandbox_abc", 100, "USD", idempotency_key="re_1")
    assert first.succeeded and first.reference and first.reference.startswith("re_sandbox_")
    assert first == await gateway.refund("ch_sandbox_abc", 100, "USD", idempotency_key="re_1")
    assert first != await gateway.refund("ch_sandbox_abc", 100, "USD", idempotency_key="re_2")
