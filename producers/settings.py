"""Settings of the hub publisher (env prefix ``CT_PUBLISHER_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PublisherSettings"]


class PublisherSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CT_PUBLISHER_", extra="ignore")

    buffer_size: int = Field(
        default=50_000, ge=1, description="Events held before the overflow policy applies."
    )
    overflow: Literal["drop", "wait"] = Field(
        default="drop",
        description="Full buffer: 'drop' the new event and count it (never blocks a game loop), "
        "or 'wait' until there is room (backpressure).",
    )
    batching: Literal["envelope", "single"] = Field(
        default="envelope",
        description="'envelope' sends one record per hub and flush holding many events; "
        "'single' sends one record per event (today's contract form).",
    )
    max_envelope_events: int = Field(default=500, ge=1)
    linger_ms: int = Field(default=20, ge=0, description="How long the sender waits to fill envelopes.")
    acks: Literal["all", "1", "0"] = "all"
    idempotence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="'auto' enables the idempotent producer when the broker grants producer ids.",
    )
    compression: Literal["none", "gzip"] = "none"
    request_timeout_ms: int = Field(default=30_000, ge=1000)
