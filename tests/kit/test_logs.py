"""JSON logs: one object per line, with the id of the request each line was written for, and
never a card number."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import httpx
import pytest

from recur.kit.logs import (
    MASK,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    configure_logging,
    mask_card_numbers,
)
from recur.kit.request_id import request_id_var

CARD = "4242424242424242"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Every `recur` log line, formatted as RECUR_LOG_FORMAT=json formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("recur")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _records(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


async def test_a_request_logs_json_lines_carrying_its_request_id(
    api: httpx.AsyncClient, json_lines: io.StringIO
) -> None:
    customer = await api.post("/v1/customers", json={"email": "ada@example.com", "currency": "USD"})
    charged = await api.post(
        "/v1/payments",
        headers={"X-Request-Id": "req_ops_json_1"},
        json={
            "customer_id": customer.json()["id"],
            "amount": 500,
            "currency": "USD",
            "card": {"number": CARD, "exp_month": 12, "exp_year": 2040, "cvc": "123"},
        },
    )
    assert charged.status_code == 200, charged.text
    assert charged.headers["x-request-id"] == "req_ops_json_1"

    records = _records(json_lines)
    ours = [r for r in records if r["request_id"] == "req_ops_json_1"]
    assert any(
        r["logger"] == "recur.payments" and charged.json()["id"] in r["message"] for r in ours
    )
    for record in records:
        assert set(record) <= {"time", "level", "logger", "message", "request_id", "exception"}
        assert record["time"].endswith("+00:00")
    assert CARD not in json_lines.getvalue()
    assert CARD[:12] not in json_lines.getvalue()


def test_exception_text_is_one_field_of_one_line(json_lines: io.StringIO) -> None:
    token = request_id_var.set("req_ops_exc")
    try:
        raise ValueError("the gateway answered nonsense")
    except ValueError:
        logging.getLogger("recur.payments").exception("charge of %s failed", "ord_1")
    finally:
        request_id_var.reset(token)
    logging.getLogger("recur.payments").info("outside any request")

    lines = json_lines.getvalue().splitlines()
    assert len(lines) == 2
    failed, outside = (json.loads(line) for line in lines)
    assert failed["level"] == "ERROR"
    assert failed["message"] == "charge of ord_1 failed"
    assert failed["request_id"] == "req_ops_exc"
    assert "ValueError: the gateway answered nonsense" in failed["exception"]
    assert outside["request_id"] == "-"
    assert "exception" not in outside


def test_card_numbers_are_masked_in_every_format() -> None:
    # Spaced, dashed, or bare; 13 to 19 digits that pass the Luhn check.
    for number in (CARD, "4000 0566 5566 5556", "5555-5555-5555-4444", "4222222222222"):
        assert mask_card_numbers(f"card {number} declined") == f"card {MASK} declined"
    # Not card numbers: counts, a Luhn failure, timestamps.
    for text in ("renewed 1200 of 1200", "4242424242424241", "2025-01-31 00:00:00+00:00"):
        assert mask_card_numbers(text) == text

    record = logging.LogRecord("recur.payments", logging.INFO, __file__, 1, "saw %s", (CARD,), None)
    assert CARD not in JsonFormatter().format(record)
    assert CARD not in TextFormatter().format(record)


def test_configure_logging_sends_every_logger_through_the_chosen_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("INFO", "json")
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("recur.app").debug("below the level")
        configure_logging("INFO", "text")
        logging.getLogger("recur.app").warning("in text")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = capsys.readouterr().err.splitlines()
    assert json.loads(lines[0]) | {"time": "t"} == {
        "time": "t",
        "level": "INFO",
        "logger": "uvicorn.error",
        "message": "Started server process",
        "request_id": "-",
    }
    assert len(lines) == 2
    assert lines[1].endswith(" WARNING recur.app [-] in text")


def test_the_stripe_package_never_logs_its_request_bodies() -> None:
    # It logs the form it sends, a card's CVC among it, at DEBUG.
    configure_logging("DEBUG", "text")
    try:
        assert logging.getLogger("stripe").getEffectiveLevel() == logging.INFO
        assert logging.getLogger("recur").getEffectiveLevel() == logging.DEBUG
    finally:
        configure_logging("INFO", "text")
