"""Tests for recur.kit.money: exact conversions, currency validation, the one rounding."""

from __future__ import annotations

from decimal import Decimal

import iso4217
import pytest
from hypothesis import given
from hypothesis import strategies as st

from recur.kit.money import (
    MAX_MINOR,
    AmountError,
    CurrencyError,
    exponent,
    format_amount,
    normalize_currency,
    round_minor,
    to_major,
    to_minor,
)

BILLABLE = sorted(c.code for c in iso4217.Currency if c.exponent is not None)
NO_MINOR_UNIT = sorted(c.code for c in iso4217.Currency if c.exponent is None)
# One currency per exponent present in the data (0, 2, 3 and 4).
BY_EXPONENT = {"JPY": 0, "USD": 2, "KWD": 3, "CLF": 4}

currencies = st.sampled_from(BILLABLE)
# Minor amounts well inside BIGINT, in both signs.
minor_amounts = st.integers(min_value=-(10**15), max_value=10**15)


# --- currencies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [("JPY", 0), ("USD", 2), ("KWD", 3), ("EUR", 2), ("BHD", 3), ("CLF", 4)],
)
def test_known_exponents(code: str, expected: int) -> None:
    assert exponent(code) == expected
    assert exponent(code.lower()) == expected


def test_iso_data_has_every_exponent_we_test() -> None:
    # Guards the parametrisation above against an iso4217 data update.
    assert {iso4217.Currency(code).exponent for code in BY_EXPONENT} == {0, 2, 3, 4}


@pytest.mark.parametrize("code", ["usd", "USD", "Usd", "eUr"])
def test_normalize_is_case_insensitive(code: str) -> None:
    assert normalize_currency(code) in {"USD", "EUR"}
    assert normalize_currency(code) == code.upper()


@pytest.mark.parametrize(
    "code",
    [
        "",
        "US",
        "USDD",
        "ZZZ",
        "QQQ",
        " usd",
        "usd ",
        "U$D",
        "123",
        "\uff35\uff33\uff24",  # fullwidth "USD": upper() is not ASCII-safe
        "\u01c5SD",  # titlecase digraph: isalpha() but not ASCII
    ],
)
def test_normalize_rejects_unknown_or_malformed(code: str) -> None:
    with pytest.raises(CurrencyError):
        normalize_currency(code)


@pytest.mark.parametrize("code", NO_MINOR_UNIT)
def test_normalize_rejects_currencies_without_minor_unit(code: str) -> None:
    with pytest.raises(CurrencyError):
        normalize_currency(code)
    with pytest.raises(CurrencyError):
        exponent(code)


def test_no_minor_unit_list_covers_metals_and_xxx() -> None:
    assert {"XAU", "XAG", "XXX", "XTS"} <= set(NO_MINOR_UNIT)


@pytest.mark.parametrize("value", [None, 840, b"USD"])
def test_normalize_rejects_non_strings(value: object) -> None:
    with pytest.raises(CurrencyError):
        normalize_currency(value)  # type: ignore[arg-type]


def test_currency_error_is_a_value_error() -> None:
    assert issubclass(CurrencyError, ValueError)
    assert issubclass(AmountError, ValueError)


@given(st.text(min_size=3, max_size=3))
def test_normalize_accepts_exactly_the_billable_codes(code: str) -> None:
    if code.upper() in BILLABLE and code.isascii():
        assert normalize_currency(code) == code.upper()
    else:
        with pytest.raises(CurrencyError):
            normalize_currency(code)


@given(currencies)
def test_every_billable_currency_normalizes_to_itself(code: str) -> None:
    assert normalize_currency(code) == code
    assert normalize_currency(code.lower()) == code
    assert exponent(code) == iso4217.Currency(code).exponent


# --- to_minor / to_major ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (Decimal("12.34"), "USD", 1234),
        ("12.34", "usd", 1234),
        ("-12.34", "USD", -1234),
        ("+0.01", "USD", 1),
        ("12", "USD", 1200),
        ("12.3", "USD", 1230),
        ("12.340", "USD", 1234),  # trailing zeros are exact, so allowed
        ("500", "JPY", 500),
        (Decimal("500.000"), "JPY", 500),
        ("0.001", "KWD", 1),
        ("1.2345", "CLF", 12345),
        (Decimal("1E+2"), "USD", 10000),
        (Decimal("0E-10"), "USD", 0),
        (Decimal("-0"), "USD", 0),
        ("0", "JPY", 0),
        # Beyond the default 28-digit Decimal context: no rounding may sneak in.
        (Decimal("92233720368547758.07"), "USD", MAX_MINOR),
        (Decimal("-92233720368547758.07"), "USD", -MAX_MINOR),
        (Decimal("1.000000000000000000000000000000000000"), "USD", 100),
    ],
)
def test_to_minor_examples(amount: Decimal | str, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("12.345", "USD"),
        (Decimal("12.345"), "USD"),
        ("0.001", "USD"),
        ("500.5", "JPY"),
        ("0.0001", "KWD"),
        ("1.23451", "CLF"),
        (Decimal("1E-999999999"), "USD"),  # must fail fast, not build 10**999999999
        (Decimal("12.3400000000000000000000000000000000001"), "USD"),
    ],
)
def test_to_minor_rejects_too_many_decimals(amount: Decimal | str, currency: str) -> None:
    with pytest.raises(AmountError, match="decimal places"):
        to_minor(amount, currency)


@pytest.mark.parametrize(
    "amount",
    [
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "sNaN",
        "abc",
        "",
        " ",
        "12,34",
        "1e3",
        "1_000",
        " 12.34",
        "12.",
        ".5",
        "--1",
        "١٢",  # Arabic-Indic digits: Decimal() accepts them, a money field should not
        Decimal("NaN"),
        Decimal("sNaN"),
        Decimal("Infinity"),
        Decimal("-Infinity"),
    ],
)
def test_to_minor_rejects_non_finite_and_non_numeric(amount: Decimal | str) -> None:
    with pytest.raises(AmountError):
        to_minor(amount, "USD")


@pytest.mark.parametrize("amount", [1.5, 0.1, None, True])
def test_to_minor_rejects_other_types(amount: object) -> None:
    with pytest.raises(AmountError):
        to_minor(amount, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "amount",
    [Decimal("92233720368547758.08"), Decimal("1E+17"), Decimal("-1E+999999999"), "9" * 40],
)
def test_to_minor_rejects_amounts_beyond_bigint(amount: Decimal | str) -> None:
    with pytest.raises(AmountError, match="too large"):
        to_minor(amount, "USD")


def test_to_minor_rejects_unknown_currency() -> None:
    with pytest.raises(CurrencyError):
        to_minor("1.00", "ZZZ")


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [
        (1234, "USD", "12.34"),
        (-1234, "USD", "-12.34"),
        (100, "USD", "1.00"),
        (0, "USD", "0.00"),
        (500, "JPY", "500"),
        (1, "KWD", "0.001"),
        (12345, "CLF", "1.2345"),
        (MAX_MINOR * 1000, "USD", "92233720368547758070.00"),  # exact beyond 28 digits
    ],
)
def test_to_major_examples(minor: int, currency: str, major: str) -> None:
    result = to_major(minor, currency)
    assert result == Decimal(major)
    assert str(result) == major  # exactly the currency's decimal places


@pytest.mark.parametrize("minor", [1.0, "100", True, Decimal(1)])
def test_to_major_requires_int(minor: object) -> None:
    with pytest.raises(TypeError):
        to_major(minor, "USD")  # type: ignore[arg-type]


@st.composite
def major_amounts(draw: st.DrawFn) -> tuple[Decimal, str]:
    """A currency (of any exponent) and a Decimal with exactly its number of places."""
    currency = draw(st.sampled_from(sorted(BY_EXPONENT)) | currencies)
    places = exponent(currency)
    amount = draw(
        st.decimals(
            min_value=-(10**12),
            max_value=10**12,
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )
    return amount, currency


@given(major_amounts())
def test_major_round_trips_through_minor(case: tuple[Decimal, str]) -> None:
    amount, currency = case
    minor = to_minor(amount, currency)
    assert isinstance(minor, int)
    back = to_major(minor, currency)
    assert back == amount
    assert back.as_tuple().exponent == -exponent(currency)
    assert to_minor(str(amount), currency) == minor


@given(st.sampled_from(sorted(BY_EXPONENT)) | currencies, minor_amounts)
def test_minor_round_trips_through_major(currency: str, minor: int) -> None:
    assert to_minor(to_major(minor, currency), currency) == minor
    assert to_minor(str(to_major(minor, currency)), currency) == minor


@given(
    st.sampled_from(sorted(BY_EXPONENT)) | currencies,
    minor_amounts,
    st.integers(min_value=1, max_value=9),
    st.integers(min_value=1, max_value=5),
)
def test_to_minor_rejects_any_extra_decimal_place(
    currency: str, minor: int, digit: int, extra_places: int
) -> None:
    # A non-zero digit below the minor unit makes the amount unrepresentable.
    amount = to_major(minor, currency) + Decimal(digit).scaleb(-exponent(currency) - extra_places)
    with pytest.raises(AmountError):
        to_minor(amount, currency)
    with pytest.raises(AmountError):
        to_minor(f"{amount:f}", currency)


# --- format_amount ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1234, "USD", "12.34 USD"),
        (1234, "usd", "12.34 USD"),
        (5, "USD", "0.05 USD"),
        (-5, "EUR", "-0.05 EUR"),
        (0, "USD", "0.00 USD"),
        (500, "JPY", "500 JPY"),
        (-1000, "KWD", "-1.000 KWD"),
        (1, "CLF", "0.0001 CLF"),
        (10**20, "JPY", "100000000000000000000 JPY"),  # never scientific notation
    ],
)
def test_format_amount(minor: int, currency: str, text: str) -> None:
    assert format_amount(minor, currency) == text


@given(currencies, minor_amounts)
def test_format_amount_parses_back(currency: str, minor: int) -> None:
    number, code = format_amount(minor, currency).split(" ")
    assert code == currency
    assert to_minor(number, code) == minor


# --- round_minor --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("0.5", 1),
        ("1.5", 2),
        ("2.5", 3),  # half up, not banker's rounding (which gives 2)
        ("-2.5", -3),  # halves go away from zero
        ("-0.5", -1),
        ("2.4999999", 2),
        ("2.5000001", 3),
        ("-2.4999999", -2),
        ("1234.0", 1234),
        ("12345678901234567890123456789012.5", 12345678901234567890123456789013),
    ],
)
def test_round_minor_examples(value: str, expected: int) -> None:
    result = round_minor(Decimal(value))
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_round_minor_rejects_non_finite(value: Decimal) -> None:
    with pytest.raises(AmountError):
        round_minor(value)


@pytest.mark.parametrize("value", [2.5, 3, "2.5"])
def test_round_minor_requires_decimal(value: object) -> None:
    with pytest.raises(TypeError):
        round_minor(value)  # type: ignore[arg-type]


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15))
def test_round_minor_is_nearest_with_halves_away_from_zero(value: Decimal) -> None:
    result = round_minor(value)
    error = abs(Decimal(result) - value)
    assert error <= Decimal("0.5")
    if error == Decimal("0.5"):
        assert abs(result) > abs(value)
    assert round_minor(-value) == -result  # symmetric: refunds round like charges
