"""Settings, read once from the environment (`RECUR_*`) at start-up and passed down."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

SERVICE_NAMES = ("customers", "subscriptions", "orders", "payments")
# The payment gateways reached over HTTP, whose address RECUR_GATEWAY_BASE_URLS may change.
GATEWAYS_WITH_BASE_URL = ("stripe", "adyen")


class Settings(BaseSettings):
    # A bad value is named, never echoed: some settings are secrets (the internal token, the
    # gateway credentials key).
    model_config = SettingsConfigDict(
        env_prefix="RECUR_", extra="ignore", hide_input_in_errors=True
    )

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
    # How events travel between processes. `auto`: through Redis Streams when this process is
    # part of a distributed topology (`service_urls` set) and `redis_url` is set, in-process
    # otherwise; `streams` insists on Redis; `inprocess` never uses it.
    event_transport: Literal["auto", "streams", "inprocess"] = "auto"
    # A stream entry read but not acknowledged for this long (its consumer died, or failed on
    # it) is taken over by another consumer of the group.
    event_claim_idle_seconds: float = Field(default=30.0, gt=0)
    # After Redis lost its streams, the events of this many seconds are relayed again.
    event_replay_window_seconds: float = Field(default=3600.0, gt=0)
    # The streams' keys start with it: topologies sharing one Redis keep their events apart.
    event_stream_prefix: str = Field(default="recur:events:", min_length=1)
    scheduler_enabled: bool = True
    bill_run_batch_size: int = Field(default=200, ge=1, le=10_000)

    log_level: str = "INFO"
    # `json`: one JSON object per line (time, level, logger, message, request_id, exception),
    # for a log pipeline; `text` for people.
    log_format: Literal["text", "json"] = "text"

    # Distributed mode: the services this process reaches over HTTP, as
    # `customers=http://127.0.0.1:8101,orders=http://127.0.0.1:8103`; the rest run in-process.
    # A URL after a comma is one more instance of the service named before it
    # (`customers=http://a:8101,http://b:8101,orders=...`, the form of RECUR_GATEWAY_UPSTREAMS):
    # calls go round robin and move to another instance when one cannot be reached.
    service_urls: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
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

    # The key that encrypts payment gateways' credentials at rest: a Fernet key
    # (`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`),
    # or several, comma-separated, to rotate keys: the first encrypts, every one decrypts.
    # Without it, only gateways with no credentials (sandbox, manual) can be configured.
    gateway_credentials_key: SecretStr | None = None
    # Where the HTTP payment gateways are reached instead of their real APIs, as
    # `stripe=http://127.0.0.1:12111,adyen=http://127.0.0.1:8080` (stripe and adyen only): for a
    # staging topology against a gateway's mock server (stripe-mock, say), or tests. Unset, each
    # gateway is its real API (Adyen's test or live platform as the tenant's credentials say).
    gateway_base_urls: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    @field_validator("gateway_credentials_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("gateway_credentials_key")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for position, key in enumerate(value.get_secret_value().split(","), start=1):
                try:
                    Fernet(key.strip())
                except ValueError:
                    raise ValueError(
                        f"key {position} is not a Fernet key (32 url-safe base64-encoded bytes)"
                    ) from None
        return value

    @field_validator("gateway_base_urls", mode="before")
    @classmethod
    def _parse_gateway_base_urls(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        urls: dict[str, str] = {}
        for entry in filter(None, (part.strip() for part in value.split(","))):
            name, sep, url = (part.strip() for part in entry.partition("="))
            if not sep:
                raise ValueError(f"{entry!r} is not NAME=http://host:port")
            urls[name] = url
        return urls

    @field_validator("gateway_base_urls")
    @classmethod
    def _known_gateways(cls, urls: dict[str, str]) -> dict[str, str]:
        unknown = set(urls) - set(GATEWAYS_WITH_BASE_URL)
        if unknown:
            raise ValueError(
                f"unknown gateways {sorted(unknown)}: a base URL is set only for "
                + " and ".join(GATEWAYS_WITH_BASE_URL)
            )
        for name, url in urls.items():
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{name}: expected an http:// or https:// URL")
        return {name: url.rstrip("/") for name, url in urls.items()}

    @field_validator("internal_token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("service_urls", mode="before")
    @classmethod
    def _parse_service_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return parse_upstreams([value])
        if isinstance(value, dict):  # one URL (a str) or several per service
            return {name: [urls] if isinstance(urls, str) else urls for name, urls in value.items()}
        return value

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
    def _known_services(cls, urls: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(urls) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}: known are {SERVICE_NAMES}")
        for name, instances in urls.items():
            bad = [url for url in instances if not url.startswith(("http://", "https://"))]
            if not instances or bad:
                raise ValueError(f"{name}: expected one or more http:// URLs, got {instances}")
        return {name: [url.rstrip("/") for url in instances] for name, instances in urls.items()}


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
