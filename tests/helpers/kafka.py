"""Read a topic back in tests (a real consumer against the session broker)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

__all__ = ["consume", "consume_values"]


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
