"""Create the pipeline's topics (idempotent: existing topics are left as they are)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from contest_telemetry.settings import KafkaSettings, TopicSettings

__all__ = ["TopicSpec", "ensure_topics", "pipeline_topics"]

_WEEK_MS = 7 * 24 * 3600 * 1000
_OUTPUT_MAX = str(2 * 1024 * 1024)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    config: dict[str, str] = field(default_factory=dict)


def pipeline_topics(topics: TopicSettings) -> list[TopicSpec]:
    """Every topic the pipeline reads or writes, with the same partition count as the input so
    that a hub's events, records and windows stay on partitions of the same number."""
    rf, n = topics.replication_factor, topics.partitions
    return [
        TopicSpec(topics.events, n, rf),
        # Dead letters are evidence: keep them longer than the events themselves. Outputs get
        # room for their largest value (a dead letter is cut at 1 MiB, streams/dlq.py).
        TopicSpec(topics.dlq, n, rf, {"retention.ms": str(4 * _WEEK_MS), "max.message.bytes": _OUTPUT_MAX}),
        TopicSpec(topics.records, n, rf, {"max.message.bytes": _OUTPUT_MAX}),
        TopicSpec(topics.windows, n, rf, {"max.message.bytes": _OUTPUT_MAX}),
        # Same count as the input: a hub keyed by hubId lands on the same partition number.
        # A packed record is at most ~1 MB (CT_INGEST_MAX_BATCH_BYTES) but one source record is
        # never split, and its normalised events are up to ~1.5x its size: room for that.
        TopicSpec(topics.ingested, n, rf, {"max.message.bytes": str(4 * 1024 * 1024)}),
    ]


async def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                topic_configs=dict(s.config),
            )
            for s in missing
        ]
        # Another process may win the race; the topic then exists, which is what we want.
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(new)
        return [s.name for s in missing]
    finally:
        await admin.close()
