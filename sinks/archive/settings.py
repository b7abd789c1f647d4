"""Settings of the archiver (env prefix ``CT_ARCHIVE_``); flags of ``archive run`` win over them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ArchiveSettings"]


class ArchiveSettings(BaseSettings):
    """Where and how ``contest.events`` and ``contest.records`` are archived."""

    model_config = SettingsConfigDict(env_prefix="CT_ARCHIVE_", extra="ignore", allow_inf_nan=False)

    dir: Path = Field(default=Path("./contest-archive"), description="Root of the archive tree.")
    group_id: str = Field(
        default="contest-telemetry-archiver",
        min_length=1,
        description="Consumer group the archiver commits its offsets to (for lag monitoring only: "
        "it resumes from the manifest).",
    )
    chunk_records: int = Field(
        default=10_000,
        ge=1,
        le=100_000_000,
        description="Kafka records per chunk: a file holds offsets [k*N, (k+1)*N-1] of one partition.",
    )
    events_topic: str | None = Field(
        default=None, description="Topic of contest events; None = CT_TOPIC_EVENTS; '' = do not archive."
    )
    records_topic: str | None = Field(
        default=None, description="Topic of contest records; None = CT_TOPIC_RECORDS; '' = do not archive."
    )
    compress_level: int = Field(default=6, ge=1, le=9, description="gzip level of the chunks.")
    idle_flush_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Close a partition's open chunk after this long without new records, so the "
        "records of a quiet partition are archived long before the topic's retention could delete "
        "them (an open chunk is only in memory: a crash reads it again from Kafka). Chunk boundaries "
        "then depend on timing as well as on offsets (still gap- and duplicate-free).",
    )
    max_chunk_age_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Close a partition's open chunk once it has been open this long, even while records "
        "still trickle in (at a few records a minute a chunk of CT_ARCHIVE_CHUNK_RECORDS could otherwise "
        "stay open for longer than the topic's retention). Boundaries then depend on timing too.",
    )
    partition_refresh_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the archiver looks for partitions added to its topics while it runs "
        "(they are archived from their first offset).",
    )
