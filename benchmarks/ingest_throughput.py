"""Benchmark the ingest stage (``streams/ingest.py``) against a bare aiokafka ceiling.

One run, one topic of ``--records`` single-event records (~400 B, ``--partitions`` partitions,
Kafka timestamps of now), read by:

- ``ceiling``: a plain aiokafka consumer, ``getmany`` + ``orjson.loads`` per record (no validation,
  no producing, no commits);
- ``ingest (<mode>)``: :class:`streams.ingest.IngestStage` in-process: validate, dead-letter, pack,
  produce the ingested records and commit each poll (``--modes``: transactional, at-least-once).

Figures are events per second from the first poll that returned records to the last one done.

Usage: ``.venv/bin/python benchmarks/ingest_throughput.py [--records N] [--partitions N]
[--bootstrap HOST:PORT] [--broker kafka|embedded] [--modes auto,off] [--json]``
(without ``--bootstrap`` / ``KAFKA_BOOTSTRAP_SERVERS`` it starts Apache Kafka from the Maven jars,
or the embedded Tansu broker with ``--broker embedded``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics
from streams.ingest import IngestStage, PackStats
from streams.settings import IngestSettings

P = "telemetry.contest."


def _iso(ms: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{int(ms % 1000):03d}Z"


def make_records(n: int, hubs: int = 50, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """``n`` single events (armed / launched / workflowStarted / resolved cycles), ~400 B each."""
    rng = random.Random(seed)
    now = time.time() * 1000
    out: list[tuple[bytes, bytes]] = []
    for i in range(n):
        hub = f"hub-{i % hubs:03d}"
        c = i // 4
        t = now - (n - i)
        base = {
            "level": "info",
            "hubId": hub,
            "roomId": f"room-{c % 97}",
            "contestKey": f"duel:{hub}:{c}",
            "schemaVersion": 1,
            "timestamp": _iso(t),
            "eventId": f"bench-{i}-{uuid.UUID(int=rng.getrandbits(128)).hex}",
        }
        kind = i % 4
        if kind == 0:
            ev = {
                **base,
                "message": P + "armed",
                "participantCount": 1,
                "participantCapacity": 2,
                "createdAt": t,
                "moderationTags": ["hub-pvp", "ranked"],
            }
        elif kind == 1:
            ev = {
                **base,
                "message": P + "launched",
                "contestId": f"c-{c}",
                "participantCount": 2,
                "participantCapacity": 2,
                "startedAt": t,
                "armingDurationMs": rng.uniform(500, 5000),
            }
        elif kind == 2:
            ev = {
                **base,
                "message": P + "workflowStarted",
                "contestId": f"c-{c}",
                "workflowId": f"wf-{c}-{hub}",
            }
        else:
            ev = {
                **base,
                "message": P + "resolved",
                "contestId": f"c-{c}",
                "participantCount": 2,
                "participantCapacity": 2,
                "outcomeTier": "decisive",
                "resolvedAt": t,
                "resolutionDurationMs": rng.uniform(50, 800),
            }
        out.append((hub.encode(), orjson.dumps(ev)))
    return out


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=20,
        max_batch_size=1 << 20,
        max_request_size=4 << 20,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def ceiling(bootstrap: str, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_wait_ms=50,
    )
    await consumer.start()
    seen, t0 = 0, None
    loads = orjson.loads
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=100, max_records=5000)
            if batch and t0 is None:
                t0 = time.perf_counter()
            for records in batch.values():
                for r in records:
                    loads(r.value)
                seen += len(records)
        return n / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await consumer.stop()


class _Timed(IngestStage):
    first: float | None = None
    last: float = 0.0

    async def _pack(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> Any:
        if self.first is None:
            self.first = time.perf_counter()
        return await super()._pack(batch)

    async def _deliver(self, poll: Any, before: Any) -> PackStats:
        stats = await super()._deliver(poll, before)
        self.last = time.perf_counter()
        return stats


async def ingest(kafka: KafkaSettings, topics: TopicSettings, n: int, mode: str) -> dict[str, Any]:
    settings = IngestSettings(group_id=f"bench-ingest-{uuid.uuid4().hex[:8]}", transactions=mode)
    stage = _Timed(kafka, topics, settings)
    await stage.start()
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        while stage.counters.records < n:
            if task.done():
                task.result()
                raise RuntimeError("the stage stopped")
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await stage.stop()
    c = stage.counters
    elapsed = stage.last - (stage.first or stage.last)
    return {
        "mode": "transactional" if stage.transactional else "at-least-once",
        "events_per_s": c.events / elapsed,
        "polls": c.polls,
        "ingested_records": c.ingested,
        "ingested_mib": c.ingested_bytes / (1 << 20),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    ap.add_argument("--broker", choices=("kafka", "embedded"), default="kafka")
    ap.add_argument(
        "--modes", default="auto,off", help="CT_INGEST_TRANSACTIONS values to run, comma-separated"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from contest_telemetry.broker import ApacheKafkaBroker, TansuBroker

        broker = (ApacheKafkaBroker() if args.broker == "kafka" else TansuBroker()).start()
        bootstrap = broker.bootstrap
    try:
        tag = uuid.uuid4().hex[:8]
        topics = TopicSettings(
            events=f"bench.events.{tag}",
            dlq=f"bench.dlq.{tag}",
            records=f"bench.records.{tag}",
            windows=f"bench.windows.{tag}",
            ingested=f"bench.ingested.{tag}",
            partitions=args.partitions,
        )
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        records = make_records(args.records)
        mean = sum(len(v) for _, v in records) / len(records)

        async def run() -> dict[str, Any]:
            await ensure_topics(kafka, pipeline_topics(topics))
            await produce(bootstrap, topics.events, records)
            result: dict[str, Any] = {"records": len(records), "mean_record_bytes": round(mean)}
            result["ceiling_events_per_s"] = await ceiling(bootstrap, topics.events, len(records))
            result["ingest"] = [await ingest(kafka, topics, len(records), m) for m in args.modes.split(",")]
            return result

        result = asyncio.run(run())
    finally:
        if broker is not None:
            broker.stop()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        top = result["ceiling_events_per_s"]
        print(
            f"{result['records']} records of ~{result['mean_record_bytes']} B on {args.partitions} partitions"
        )
        print(f"  ceiling (getmany + orjson.loads): {top:>9,.0f} events/s")
        for r in result["ingest"]:
            print(
                f"  ingest ({r['mode']}): {r['events_per_s']:>9,.0f} events/s  "
                f"= {r['events_per_s'] / top:.2f} x ceiling  ({r['polls']} polls, "
                f"{r['ingested_records']} records, {r['ingested_mib']:.1f} MiB)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
