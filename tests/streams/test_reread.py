"""Re-reading input ranges the state has not applied (streams/reread.py), against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaProducer

from contest_telemetry.settings import KafkaSettings
from streams.exceptions import RereadError
from streams.reread import RangeReader, missing_range


@pytest.mark.parametrize(
    ("applied", "offset", "expected"),
    [
        (-1, 0, None),  # nothing applied yet: start wherever the group starts
        (-1, 500, None),
        (9, 10, None),  # the next record
        (9, 5, None),  # already applied: the engine skips it
        (9, 9, None),
        (9, 11, (10, 11)),
        (9, 135, (10, 135)),
    ],
)
def test_missing_range(applied: int, offset: int, expected: tuple[int, int] | None) -> None:
    assert missing_range(applied, offset) == expected


async def _read(reader: RangeReader, partition: int, first: int, stop: int) -> list[tuple[int, bytes]]:
    try:
        return [(r.offset, r.value) async for r in reader.read(partition, first, stop)]
    finally:
        await reader.close()


async def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for v in values:
            await producer.send_and_wait(topic, v, partition=partition)
    finally:
        await producer.stop()


@pytest.mark.kafka
def test_reads_exactly_the_range(kafka_settings: KafkaSettings, make_topic: Callable[..., str]) -> None:
    topic = make_topic("reread", partitions=2)
    values = [f"v{i}".encode() for i in range(30)]
    asyncio.run(_produce(kafka_settings.bootstrap_servers, topic, values, partition=1))
    got = asyncio.run(_read(RangeReader(kafka_settings, topic, max_records=4), 1, 7, 19))
    assert got == [(i, f"v{i}".encode()) for i in range(7, 19)]


@pytest.mark.kafka
def test_offsets_absent_from_the_log_are_not_waited_for(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str], require_apache_kafka: None
) -> None:
    """Transaction markers take an offset each: the range holds fewer records than offsets."""
    topic = make_topic("reread-txn")
    bootstrap = kafka_settings.bootstrap_servers

    async def produce_in_transactions() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"txn-{topic}")
        await producer.start()
        try:
            for batch in (["a", "b", "c"], ["d", "e", "f"]):
                async with producer.transaction():
                    for v in batch:
                        await producer.send_and_wait(topic, v.encode(), partition=0)
        finally:
            await producer.stop()

    asyncio.run(produce_in_transactions())
    got = asyncio.run(_read(RangeReader(kafka_settings, topic), 0, 0, 8))
    assert [v for _, v in got] == [b"a", b"b", b"c", b"d", b"e", b"f"]
    assert [o for o, _ in got] == [0, 1, 2, 4, 5, 6]  # 3 and 7 are the commit markers


@pytest.mark.kafka
def test_no_progress_raises_with_the_range(
    kafka_settings: KafkaSettings, make_topic: Callable[..., str]
) -> None:
    topic = make_topic("reread-short")
    asyncio.run(_produce(kafka_settings.bootstrap_servers, topic, [b"x", b"y", b"z"], partition=0))
    reader = RangeReader(kafka_settings, topic, timeout_s=1.0)
    with pytest.raises(RereadError) as info:
        asyncio.run(_read(reader, 0, 1, 10))
    assert (info.value.partition, info.value.first, info.value.stop, info.value.position) == (0, 1, 10, 3)
    assert f"{topic}[0] offsets 1..9" in str(info.value)
