"""Settings of the archiver (env prefix ``CT_ARCHIVE_``); flags of ``archive run`` win over them."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ArchiveS3Settings", "ArchiveSettings"]


class ArchiveSettings(BaseSettings):
    """Where and how ``contest.events`` and ``contest.records`` are archived."""

    model_config = SettingsConfigDict(env_prefix="CT_ARCHIVE_", extra="ignore", allow_inf_nan=False)

    dir: str = Field(
        default="./contest-archive",
        min_length=1,
        description="Root of the archive: a directory, or s3://bucket/prefix for object storage "
        "(credentials and endpoint: CT_ARCHIVE_S3_* / AWS_*).",
    )
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


class ArchiveS3Settings(BaseSettings):
    """Object storage for archives given as ``s3://bucket/prefix`` (AWS variable names where AWS has one)."""

    model_config = SettingsConfigDict(
        env_prefix="CT_ARCHIVE_S3_", extra="ignore", allow_inf_nan=False, populate_by_name=True
    )

    endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CT_ARCHIVE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL"),
        description="S3 endpoint (http(s)://host:port) of an S3-compatible store; also read from "
        "AWS_ENDPOINT_URL; unset = AWS S3 of the region.",
    )
    region: str = Field(
        default="us-east-1",
        min_length=1,
        validation_alias=AliasChoices("CT_ARCHIVE_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
        description="Region the requests are signed for (AWS_REGION / AWS_DEFAULT_REGION).",
    )
    access_key_id: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CT_ARCHIVE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="Access key (AWS_ACCESS_KEY_ID); unset = anonymous requests. Never logged.",
    )
    secret_access_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CT_ARCHIVE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="Secret key (AWS_SECRET_ACCESS_KEY). Never logged.",
    )
    session_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CT_ARCHIVE_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
        description="Session token of temporary credentials (AWS_SESSION_TOKEN). Never logged.",
    )
    max_retries: int = Field(
        default=5,
        ge=0,
        le=100,
        description="Retries of one object-store request that failed for a transient reason (connection, "
        "timeout, 5xx, throttling), with doubling backoff; then the archiver stops (exit 1) without "
        "committing Kafka offsets past what was stored. Counted in the stats' storageRetries.",
    )
    retry_backoff_seconds: float = Field(
        default=0.5, gt=0, le=60, description="First retry's wait; doubles per retry, at most 10 s."
    )
    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, le=300, description="TCP connect timeout of one request."
    )
    read_timeout_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="Timeout waiting for a response's bytes."
    )
    read_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Manifest objects read at once when an archive on object storage is opened "
        "(one small object per chunk).",
    )
    spool_bytes: int = Field(
        default=8 << 20,
        ge=64 << 10,
        le=1 << 30,
        description="Bytes of a chunk held in memory before it spills to a temp file: each open partition's "
        "chunk (and each chunk being read) takes up to this much memory; larger chunks are uploaded "
        "from a temp file.",
    )
