"""Settings of the hub publisher (env prefix ``CT_PUBLISHER_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["PublisherSettings"]


class PublisherSettings(BaseSettings):
    """How the hub publisher buffers and sends events (env prefix ``CT_PUBLISHER_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_PUBLISHER_", extra="ignore", allow_inf_nan=False)

    buffer_size: int = Field(
        default=50_000,
        ge=1,
        description="Events held, waiting or sent and not yet acknowledged, before the overflow policy "
        "applies.",
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
    max_envelope_events: int = Field(default=500, ge=1, description="Most events in one envelope record.")
    max_record_bytes: int = Field(
        default=1_000_000,
        ge=4096,
        le=4_000_000,
        description="Largest record value sent (keep under the topic's max.message.bytes, 1 MiB by "
        "default): envelopes are cut to fit, and an event that does not fit in one of its own is "
        "refused when recorded.",
    )
    linger_ms: int = Field(default=20, ge=0, description="How long the sender waits to fill envelopes.")
    acks: Literal["all", "1", "0"] = Field(default="all", description="Broker acknowledgement: all, 1 or 0.")
    idempotence: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="'auto' enables the idempotent producer when the broker grants producer ids.",
    )
    compression: Literal["none", "gzip"] = Field(
        default="none", description="Record compression: none or gzip."
    )
    request_timeout_ms: int = Field(
        default=30_000,
        ge=1000,
        description="Give up a produce request after this long (then counted as failed).",
    )
