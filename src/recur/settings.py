"""Settings, read once from the environment (`RECUR_*`) at start-up and passed down."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
