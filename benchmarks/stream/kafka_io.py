"""Publishing the benchmark's records and reading what the worker wrote (aiokafka, no worker code)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from contest_telemetry.settings import TopicSettings


def partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's (and Kafka's) default partitioner gives a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def make_producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=linger_ms,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )


async def send_batched(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]], partitions: int
) -> list[asyncio.Future[Any]]:
    """Queue ``records`` as record batches per partition (the default partitioner's choice for each
    key): one Kafka record per element, without ``send``'s per-record overhead in this process."""
    futures: list[asyncio.Future[Any]] = []
    batches: dict[int, Any] = {}
    for key, value in records:
        p = partition_of(key, partitions)
        batch = batches.get(p)
        if batch is None:
            batch = batches[p] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[p] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")
    for p, batch in batches.items():
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=p))
    return futures


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int) -> float:
    """Publish ``records`` (acknowledged); seconds from the first send to the last acknowledgement."""
    producer = make_producer(bootstrap)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        t0 = time.perf_counter()
        futures = await send_batched(producer, topic, records, partitions)
        await asyncio.gather(*futures)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def read_changelog(bootstrap: str, app_id: str) -> dict[str, Any]:
    """Records and key + value bytes of the worker's changelog, from its start to its end offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = await admin.list_topics()
    finally:
        await admin.close()
    topic = f"{app_id}-state-changelog"
    if topic not in names:
        found = sorted(t for t in names if t.startswith(app_id) and t.endswith("changelog"))
        if not found:
            return {"changelog_topic": None, "changelog_records": None, "changelog_bytes": None}
        topic = found[0]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    n = size = 0
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            got = await consumer.getmany(*todo, timeout_ms=1000, max_records=10_000)
            for tp, records in got.items():
                for r in records:
                    if r.offset < ends[tp]:
                        n += 1
                        size += len(r.key or b"") + len(r.value or b"")
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return {"changelog_topic": topic, "changelog_records": n, "changelog_bytes": size}


async def records_in(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in ``topic`` (the sum of its end offsets: it is never truncated here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def committed_offsets(
    admin: AIOKafkaAdminClient, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The group's committed offsets; none while its coordinator is not there yet (a fresh
    Apache Kafka broker creates ``__consumer_offsets`` on the first group)."""
    try:
        got = await admin.list_consumer_group_offsets(group, partitions=tps)
    except KafkaError:
        return {}
    return {tp: meta.offset for tp, meta in got.items()}


def bench_topics(tag: str, partitions: int) -> TopicSettings:
    return TopicSettings(
        events=f"bench.events.{tag}",
        dlq=f"bench.dlq.{tag}",
        records=f"bench.records.{tag}",
        windows=f"bench.windows.{tag}",
        ingested=f"bench.ingested.{tag}",
        partitions=partitions,
    )
