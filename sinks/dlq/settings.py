"""Settings of ``dlq inspect`` and ``dlq redrive`` (env prefix ``CT_DLQ_``); their flags win."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DlqToolSettings"]


class DlqToolSettings(BaseSettings):
    """Bounds of the dead-letter tools (``dlq inspect``, ``dlq redrive``)."""

    model_config = SettingsConfigDict(env_prefix="CT_DLQ_", extra="ignore", allow_inf_nan=False)

    max_records: int = Field(
        default=100_000,
        ge=1,
        le=100_000_000,
        description="Most dead letters one inspect or redrive reads (--max); the summary says when it "
        "stopped there (truncated) and the next offsets to start from.",
    )
    max_keys: int = Field(
        default=1_000,
        ge=1,
        le=1_000_000,
        description="Most distinct hubs and fields inspect counts one by one; the rest are counted "
        "together (otherHubs, otherFields).",
    )
    max_reasons: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Most distinct reasons inspect counts one by one and keeps samples for (the worker "
        "writes a handful; other producers of the topic may write any); dead letters with any further "
        "reason are counted together (otherReasons) with CT_DLQ_SAMPLES samples (otherReasonSamples).",
    )
    samples: int = Field(default=3, ge=0, le=100, description="Sample dead letters inspect shows per reason.")
    max_in_flight: int = Field(
        default=5_000,
        ge=1,
        le=1_000_000,
        description="Most redriven records sent and not yet acknowledged (redrive waits beyond it).",
    )
