"""A hostile corpus against a real worker (and its ingest stage) on a real broker, in both input
forms: every bad record is dead-lettered with its reason, the worker keeps processing, and the
good hubs' windows equal the reference."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from contest_telemetry.settings import KafkaSettings, TopicSettings
from tests.helpers.hostile import good_in_hostile, hostile_records, hostile_stamped_records
from tests.helpers.streams_reference import check_all, make_events, reference_windows
from tests.helpers.streams_worker import WorkerProcess, collect, produce
from tests.streams.test_worker_kafka import (
    FORMS,
    _wait_windows,
    as_records,
    expected_ids,
    results_of,
    tick_records,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


async def _produce_stamped(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, int, str]]) -> None:
    """Send records with the Kafka timestamp each names (a hub's producer chooses it)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value, timestamp_ms, _reason in records:
            await (await producer.send(topic, value, key=key, timestamp_ms=timestamp_ms))
    finally:
        await producer.stop()


@FORMS
def test_hostile_records_are_dead_lettered_and_good_hubs_are_unharmed(
    tmp_path: Path, kafka_settings: KafkaSettings, topic_settings: TopicSettings, unique: str, form: str
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    events = make_events(hubs=4, contests_per_hub=80, span_ms=240_000, seed=17)
    bad = hostile_records(events[0], form)
    stamped = hostile_stamped_records(events[0], form, int(time.time() * 1000))
    extra = good_in_hostile(events[0], form)
    ref = reference_windows(sorted([*events, *extra], key=lambda e: e["timestamp"]))
    good = as_records(events, form, per=20)
    # Interleave: a bad record after every few good ones.
    step = max(1, len(good) // (len(bad) + 1))
    recs: list[tuple[bytes | None, bytes | None]] = []
    for i, (key, value, _reason) in enumerate(bad):
        recs += good[i * step : (i + 1) * step]
        recs.append((key, value))
    recs += good[len(bad) * step :]
    worker = WorkerProcess(
        bootstrap, topic_settings, f"ct-test-{unique}", tmp_path / "data", tmp_path / "w.log"
    ).start()
    try:
        # First: had they passed, their far-future events would make every later good event late.
        asyncio.run(_produce_stamped(bootstrap, topic_settings.events, stamped))
        asyncio.run(produce(bootstrap, topic_settings.events, recs))  # type: ignore[arg-type]
        asyncio.run(
            produce(
                bootstrap,
                topic_settings.events,
                tick_records(topic_settings.partitions),
                partition_of=lambda i: i,
            )
        )
        values = _wait_windows(
            bootstrap, topic_settings.windows, expected_ids(ref, topic_settings.partitions), worker.alive
        )
        time.sleep(1.0)
        assert check_all(results_of(values), ref) == [], worker.log()
        n_bad = len(bad) + len(stamped)
        dead: list[dict[str, Any]] = asyncio.run(
            collect(bootstrap, topic_settings.dlq, lambda v: len(v) >= n_bad, timeout=60)
        )
        time.sleep(2.0)
        dead = asyncio.run(collect(bootstrap, topic_settings.dlq, lambda v: len(v) >= n_bad, timeout=30))
        want = Counter(reason for _k, _v, reason in bad) + Counter(r for *_x, r in stamped)
        assert Counter(d["reason"] for d in dead) == want
        assert all(d["source"]["topic"] == topic_settings.events and d["error"] for d in dead)
        assert worker.alive(), worker.log()
    finally:
        worker.stop()
