"""Settings, read once from the environment (`RECUR_*`) at start-up and passed down."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SERVICE_NAMES = ("customers", "subscriptions", "orders", "payments")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RECUR_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = "sqlite+aiosqlite:///./recur.db"
    redis_url: str | None = None

    rate_limit_per_second: float = Field(default=100.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)

    idempotency_ttl_hours: int = Field(default=24, ge=24)
    # How often the server runs the bill run and re-delivers events left in an outbox.
    bill_run_interval_seconds: float = Field(default=60.0, gt=0)
    outbox_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    scheduler_enabled: bool = True
    bill_run_batch_size: int = Field(default=200, ge=1, le=10_000)

    log_level: str = "INFO"
    # `json`: one JSON object per line (time, level, logger, message, request_id, exception),
    # for a log pipeline; `text` for people.
    log_format: Literal["text", "json"] = "text"

    # Distributed mode: the services this process reaches over HTTP, as
    # `customers=http://127.0.0.1:8101,orders=http://127.0.0.1:8103`; the rest run in-process.
    service_urls: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # The shared secret of the services' internal endpoints; every service process needs it.
    internal_token: str | None = Field(default=None, min_length=16)
    service_timeout_seconds: float = Field(default=30.0, gt=0)

    # The gateway process (`recur gateway`): each service's instances, as
    # `customers=http://10.0.0.1:8101,http://10.0.0.2:8101,orders=http://10.0.0.3:8103` (a URL
    # after a comma is one more instance of the service named before it). A service missing
    # here is reached at its RECUR_SERVICE_URLS entry.
    gateway_upstreams: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    # Active health checks of every instance's /healthz, and the circuit breaker per instance:
    # opened by this many failures in a row (connection errors, timeouts, 5xx), half-opened
    # for one trial request after the cool-down.
    gateway_health_interval_seconds: float = Field(default=2.0, gt=0)
    gateway_breaker_failures: int = Field(default=5, ge=1)
    gateway_breaker_cooldown_seconds: float = Field(default=10.0, gt=0)
    gateway_connect_timeout_seconds: float = Field(default=2.0, gt=0)

    @field_validator("internal_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("service_urls", mode="before")
    @classmethod
    def _parse_service_urls(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        urls = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            name, sep, url = entry.partition("=")
            name, url = name.strip(), url.strip().rstrip("/")
            if not sep or name not in SERVICE_NAMES or not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"{entry!r}: expected NAME=http://host:port with NAME one of "
                    + ", ".join(SERVICE_NAMES)
                )
            urls[name] = url
        return urls

    @field_validator("gateway_upstreams", mode="before")
    @classmethod
    def _parse_gateway_upstreams(cls, value: object) -> object:
        return parse_upstreams([value]) if isinstance(value, str) else value

    @field_validator("gateway_upstreams")
    @classmethod
    def _known_upstreams(cls, upstreams: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(upstreams) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}: known are {SERVICE_NAMES}")
        return {name: [url.rstrip("/") for url in urls] for name, urls in upstreams.items()}

    @field_validator("service_urls")
    @classmethod
    def _known_services(cls, urls: dict[str, str]) -> dict[str, str]:
        unknown = set(urls) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}: known are {SERVICE_NAMES}")
        return {name: url.rstrip("/") for name, url in urls.items()}


def parse_upstreams(values: list[str]) -> dict[str, list[str]]:
    """Service instances from `NAME=URL,URL` strings (several services may share one string:
    `customers=http://a:8101,http://b:8101,orders=http://c:8103`). Raises ValueError."""
    upstreams: dict[str, list[str]] = {}
    for value in values:
        name = None
        for entry in filter(None, (part.strip() for part in value.split(","))):
            if not entry.startswith(("http://", "https://")):
                name, sep, entry = (part.strip() for part in entry.partition("="))
                if not sep or name not in SERVICE_NAMES:
                    raise ValueError(
                        f"{value!r}: expected NAME=URL,URL with NAME one of "
                        + ", ".join(SERVICE_NAMES)
                    )
            if name is None or not entry.startswith(("http://", "https://")):
                raise ValueError(f"{value!r}: {entry!r} is not NAME=http://host:port")
            url = entry.rstrip("/")
            if url not in upstreams.setdefault(name, []):
                upstreams[name].append(url)
    return upstreams
