"""Kafka helpers for tests: per-test topic names, reading a topic back (a real consumer)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from contest_telemetry.settings import TopicSettings

__all__ = ["consume", "consume_values", "unique_topics"]


def unique_topics(unique: str, partitions: int = 2) -> TopicSettings:
    """The pipeline's topic names with a per-test suffix (create them with ``ensure_topics``)."""
    return TopicSettings(
        events=f"contest.events.{unique}",
        dlq=f"contest.events.dlq.{unique}",
        records=f"contest.records.{unique}",
        windows=f"contest.windows.{unique}",
        ingested=f"contest.events.ingested.{unique}",
        partitions=partitions,
    )


async def consume(
    bootstrap: str, topic: str, *, count: int, timeout: float = 60.0, idle: float = 0.0
) -> list[ConsumerRecord[Any, Any]]:
    """Read from the beginning until ``count`` records arrived (then ``idle`` more seconds to catch
    extras), or fail after ``timeout``."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[ConsumerRecord[Any, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
        if idle:
            end = time.monotonic() + idle
            while time.monotonic() < end:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend(records)
    finally:
        await consumer.stop()
    if len(out) < count:
        raise AssertionError(f"{topic}: got {len(out)} records, expected {count} within {timeout}s")
    return out


def consume_values(bootstrap: str, topic: str, *, count: int, timeout: float = 60.0) -> list[bytes]:
    records = asyncio.run(consume(bootstrap, topic, count=count, timeout=timeout))
    return [r.value for r in records]
