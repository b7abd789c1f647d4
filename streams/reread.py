"""Re-read a range of an input partition that the state has not applied (see :func:`missing_range`).

The state of each input partition holds the last source offset it contains (``PartState.applied``),
so the next record to apply is ``applied + 1``. faust does not guarantee that this is the next
record its stream yields. Seen on Apache Kafka around a SIGKILL and the rebalance after it
(``tests/streams/test_worker_kafka.py::test_two_workers_one_killed_mid_stream``):

- on recovery faust resumes the source partitions and seeks them to the committed offset, then
  ``flow_control.resume()`` clears the agent's queue: records fetched in between are dropped and
  faust's read offset has already moved past them, so they are never fetched again;
- its commit logic accepts an unacknowledged head when the first acknowledged offset is
  ``committed + 1`` (``Consumer._new_offset``), so a dropped record can be committed;
- its producer flush before a commit could return with changelog writes still queued (fixed by
  :func:`streams.faust_patches.complete_producer_flush`), so a killed worker's successor
  recovered a state older than the committed offset it resumed from.

Each shows up here the same way: the stream yields a record beyond ``applied + 1``. The worker
then reads the missing offsets itself, with a consumer of its own that belongs to no group, and
applies them before the record in hand. Records at or below ``applied`` are skipped by the
engine, so reading again is always safe: the committed offset is only where reading starts.

Offsets absent from the log (transaction markers, records removed by retention) are simply not
returned; :class:`RangeReader` reports how many records it found so the worker counts the rest.

One of the three parts of the worker's at-least-once delivery, described together in
:mod:`streams.faust_patches` ("At-least-once delivery").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from contest_telemetry.settings import KafkaSettings
from streams.exceptions import RereadError

__all__ = ["RangeReader", "missing_range"]


def missing_range(applied: int, offset: int) -> tuple[int, int] | None:
    """Offsets ``[first, stop)`` to apply before the record at ``offset``, or None.

    ``applied`` is the partition state's last applied offset, -1 when the state has none (a
    partition never processed starts wherever the group's offset reset puts it).
    """
    if applied < 0 or offset <= applied + 1:
        return None
    return applied + 1, offset


class RangeReader:
    """Reads ``[first, stop)`` of one partition of ``topic``; one client, created on first use."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        timeout_s: float = 60.0,
        max_records: int = 2_000,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.timeout_s = timeout_s
        self.max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def _client(self) -> AIOKafkaConsumer:
        async with self._lock:  # the agent and the watchdog may both ask first
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    **self.kafka.aiokafka_kwargs(),  # type: ignore[arg-type]
                    client_id=f"{self.kafka.client_id}-reread",
                    group_id=None,
                    enable_auto_commit=False,
                    # Offsets below the log start (retention) restart at the first record kept.
                    auto_offset_reset="earliest",
                    # What faust's own consumer sees (it reads uncommitted too).
                    isolation_level="read_uncommitted",
                    fetch_max_wait_ms=100,
                )
                await consumer.start()
                self._consumer = consumer
            return self._consumer

    async def read(self, partition: int, first: int, stop: int) -> AsyncIterator[ConsumerRecord]:
        """Yield the records of ``[first, stop)`` in offset order.

        Raises :class:`RereadError` when no progress is made for ``timeout_s`` (broker away):
        the worker then stops (``app.crash``) rather than apply the record in hand over a hole.
        """
        consumer = await self._client()
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, first)
        position = first
        deadline = time.monotonic() + self.timeout_s
        while position < stop:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=self.max_records)
            for record in batch.get(tp, ()):
                if record.offset >= stop:
                    return
                yield record
            new_position = await consumer.position(tp)
            if new_position > position:
                position = new_position
                deadline = time.monotonic() + self.timeout_s
            elif time.monotonic() > deadline:
                raise RereadError(self.topic, partition, first, stop, position)
            await asyncio.sleep(0)

    async def start_offset(self, partition: int) -> int:
        """The partition's log start (the first offset retention has kept)."""
        consumer = await self._client()
        tp = TopicPartition(self.topic, partition)
        starts = await consumer.beginning_offsets([tp])
        return int(starts[tp])

    async def end_offset(self, partition: int) -> int:
        """The partition's end offset (the offset the next record written will get)."""
        consumer = await self._client()
        tp = TopicPartition(self.topic, partition)
        ends = await consumer.end_offsets([tp])
        return int(ends[tp])

    async def close(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
