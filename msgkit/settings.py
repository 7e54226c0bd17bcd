"""Configuration from the environment (`MSGKIT_*`) or a `.env` file, via pydantic-settings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from msgkit.guarantee import Guarantee
from msgkit.url import redact


class Settings(BaseSettings):
    """Defaults for `msgkit.connect()`; every field can be overridden per call.

    `MSGKIT_URL=kafka://localhost:9092` is all it takes to move a service to Kafka.
    """

    model_config = SettingsConfigDict(env_prefix="MSGKIT_", env_file=".env", extra="ignore")

    url: str = Field(default="memory://", repr=False)
    """Broker URL; the scheme picks the backend (memory, kafka, amqp, amqps, ...)."""
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE
    """Default delivery guarantee of producers and consumers."""
    concurrency: int = Field(default=1, ge=1)
    """Default number of messages a consumer handles at once."""
    max_attempts: int = Field(default=5, ge=1)
    """Deliveries of one message before it is dead-lettered."""
    stop_timeout: float = Field(default=30.0, gt=0)
    """Seconds `Consumer.stop()` and `Broker.close()` give the handlers running to finish;
    then they are cancelled and their messages go back to the broker. `inf`: no limit."""
    dedup_url: str | None = Field(default=None, repr=False)
    """Idempotency store for `msgkit.dedup.Dedup.from_settings()` (memory, sqlite, redis, postgresql)."""

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        yield "url", redact(self.url)
        yield "dedup_url", None if self.dedup_url is None else redact(self.dedup_url)
        yield from ((k, v) for k, v in super().__repr_args__() if k not in ("url", "dedup_url"))
