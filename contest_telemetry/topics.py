"""Create the pipeline's topics (idempotent: existing topics are left as they are), and wait for
the brokers to answer (a bounded retry, then one line saying which brokers did not answer)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from contest_telemetry.exceptions import ContestTelemetryError
from contest_telemetry.settings import KafkaSettings, TopicSettings

__all__ = [
    "BrokerUnreachableError",
    "TopicSpec",
    "await_partitions",
    "connect_admin",
    "ensure_topics",
    "pipeline_topics",
    "topic_partitions",
    "wait_for_brokers",
]

_AIOKAFKA_LOGGERS = ("aiokafka", "aiokafka.conn", "aiokafka.admin.client")


class BrokerUnreachableError(ContestTelemetryError):
    """No broker of ``KAFKA_BOOTSTRAP_SERVERS`` answered within the retry budget (the message is
    one line: the brokers, the protocol, how long, and aiokafka's last reason)."""


_WEEK_MS = 7 * 24 * 3600 * 1000


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
    out_max = str(topics.output_max_message_bytes)
    return [
        TopicSpec(topics.events, n, rf),
        # Dead letters are evidence: keep them longer than the events themselves. Outputs get
        # room for their largest value (a dead letter is cut at CT_TOPIC_DLQ_MAX_BYTES, which the
        # settings keep below this limit; streams/dlq.py).
        TopicSpec(topics.dlq, n, rf, {"retention.ms": str(4 * _WEEK_MS), "max.message.bytes": out_max}),
        TopicSpec(topics.records, n, rf, {"max.message.bytes": out_max}),
        TopicSpec(topics.windows, n, rf, {"max.message.bytes": out_max}),
        # Same count as the input: a hub keyed by hubId lands on the same partition number.
        # A packed record is at most ~1 MB (CT_INGEST_MAX_BATCH_BYTES) but one source record is
        # never split, and its normalised events are up to ~1.5x its size: room for that
        # (CT_TOPIC_INGESTED_MAX_MESSAGE_BYTES).
        TopicSpec(topics.ingested, n, rf, {"max.message.bytes": str(topics.ingested_max_message_bytes)}),
    ]


class _LastError(logging.Filter):
    """Keeps the text of the last warning or error aiokafka logs and drops the record: a retry
    loop prints one line at the end, not one per failed attempt."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        self.last = record.getMessage()
        return False


@contextlib.contextmanager
def _aiokafka_errors() -> Iterator[_LastError]:
    catcher = _LastError()
    loggers = [logging.getLogger(name) for name in _AIOKAFKA_LOGGERS]
    for logger in loggers:
        logger.addFilter(catcher)
    try:
        yield catcher
    finally:
        for logger in loggers:
            logger.removeFilter(catcher)


async def connect_admin(kafka: KafkaSettings, timeout_s: float | None = None) -> AIOKafkaAdminClient:
    """A started admin client; tries again (0.5 s, 1 s, then every 2 s) while no broker answers,
    and raises :class:`BrokerUnreachableError` after ``timeout_s`` (default
    ``KAFKA_CONNECT_TIMEOUT_S``). aiokafka's log lines about the failed attempts are held back
    (the last one is the error's reason)."""
    if timeout_s is None:
        timeout_s = kafka.connect_timeout_s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay, attempts = 0.5, 0
    reason: str | None = None
    with _aiokafka_errors() as errors:
        while True:
            attempts += 1
            admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
            try:
                await asyncio.wait_for(admin.start(), max(deadline - loop.time(), 0.1))
                return admin
            except (KafkaError, OSError, TimeoutError) as exc:
                reason = errors.last or str(exc) or type(exc).__name__
            except BaseException:
                await admin.close()
                raise
            await admin.close()
            left = deadline - loop.time()
            if left <= 0:
                break
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)
    raise BrokerUnreachableError(
        f"no Kafka broker answered at KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers} "
        f"({kafka.security_protocol}) in {timeout_s:g} s (KAFKA_CONNECT_TIMEOUT_S), {attempts} attempts; "
        "last error: " + " ".join(str(reason).split())
    )


async def wait_for_brokers(kafka: KafkaSettings, timeout_s: float | None = None) -> None:
    """Return once a broker answers; :class:`BrokerUnreachableError` after ``timeout_s``."""
    admin = await connect_admin(kafka, timeout_s)
    await admin.close()


async def ensure_topics(kafka: KafkaSettings, specs: list[TopicSpec]) -> list[str]:
    """Create the topics that do not exist yet; return the names created. The first thing the
    commands that connect do: no broker answering within ``KAFKA_CONNECT_TIMEOUT_S`` raises
    :class:`BrokerUnreachableError` (one line)."""
    admin = await connect_admin(kafka)
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


async def topic_partitions(consumer: Any, topics: Iterable[str]) -> dict[str, set[int]]:
    """Each topic's partitions from one full metadata fetch (a consumer's own cache knows only the
    topics it is assigned and is refreshed every few minutes). The one place that reaches into
    aiokafka's client for it."""
    cluster = await consumer._client.fetch_all_metadata()
    return {topic: set(cluster.partitions_for_topic(topic) or ()) for topic in topics}


async def await_partitions(
    consumer: Any, topics: Iterable[str], timeout_s: float = 10.0, interval_s: float = 0.2
) -> dict[str, set[int]]:
    """:func:`topic_partitions`, asked again until every topic has partitions or ``timeout_s``
    passed (a topic created a moment ago takes a moment to show up); a topic still missing then
    has an empty set."""
    wanted = list(topics)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = await topic_partitions(consumer, wanted)
        if all(found.values()) or asyncio.get_running_loop().time() >= deadline:
            return found
        await asyncio.sleep(interval_s)
