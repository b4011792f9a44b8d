"""Log lines for people (text) or for a log pipeline (JSON, one object per line).

Every line carries the id of the request it was written for: the gateway's request-id
middleware sets `kit.request_id.request_id_var` for the request's whole life (a service process
takes it from the caller's `X-Request-Id`), and the filter below copies it onto each record,
so a line from deep inside a service names the request that caused it.

A card number must never reach a log. Nothing in Recur logs one; as a second line of defence
the formatters mask any run of 13 to 19 digits (spaced or dashed) that passes the Luhn check,
in the message and in the exception text alike.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Literal

import orjson

from recur.kit.request_id import request_id_var

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_CARD_LIKE = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
MASK = "[card number removed]"


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def mask_card_numbers(text: str) -> str:
    """`text` with every digit run that could be a card number (13-19 digits, Luhn valid,
    spaces or dashes between) replaced by a marker."""

    def replace(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group())
        return MASK if _luhn_valid(digits) else match.group()

    return _CARD_LIKE.sub(replace, text)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (or `-` outside a request) on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class TextFormatter(logging.Formatter):
    """The classic one-line format, with the request id and card numbers masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return mask_card_numbers(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, and exception
    text when there is one. Only these fields: a record's other attributes (arguments,
    extras) could hold anything, so they stay out."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": mask_card_numbers(record.getMessage()),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
        }
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = mask_card_numbers(record.exc_text)
        if record.stack_info:
            line["stack"] = mask_card_numbers(self.formatStack(record.stack_info))
        return orjson.dumps(line).decode()


def configure_logging(level: str, format: LogFormat = "text") -> None:
    """Send every logger (uvicorn's included, when it is started with `log_config=None`) to
    standard error in `format`, at `level`. Called once by a command at start-up."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # The stripe package logs the form bodies it sends, a card's CVC and expiry among them, at
    # DEBUG: never, whatever the level asked for.
    logging.getLogger("stripe").setLevel(max(logging.INFO, root.level))
