"""The ingest stage: :func:`streams.ingest.pack` on plain records, and the stage against the broker
(in-process, and ``python -m streams ingest`` killed and restarted mid-stream)."""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.partitioner import murmur2

from contest_telemetry.schema import encode_envelope
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics
from streams.ingest import IngestStage, _Chunk, _Poll, _records, pack
from streams.ingested import IngestedBatch, encode_ingested, parse_ingested
from streams.settings import IngestSettings
from tests.helpers.kafka import unique_topics
from tests.helpers.streams_reference import make_events

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "contest.events"


@dataclass
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 1_700_000_000_000


def _events(hubs: int = 3, contests: int = 4, seed: int = 7) -> list[dict[str, Any]]:
    return make_events(hubs=hubs, contests_per_hub=contests, seed=seed)


def _single(partition: int, offset: int, ev: dict[str, Any]) -> Rec:
    return Rec(partition, offset, ev["hubId"].encode(), orjson.dumps(ev))


def _batches(ingested: list[tuple[bytes, bytes]], partitions: int | None = None) -> list[Any]:
    """Every batch of the records, in order. Without ``partitions`` each record holds one batch
    keyed by its hub; with, every batch's hub maps to the partition of the record's key."""
    out = []
    for key, value in ingested:
        batches = parse_ingested(orjson.loads(value))
        assert batches
        for batch in batches:
            if partitions is None:
                assert len(batches) == 1 and key == batch.hub.encode()
            else:
                assert _worker_partition(batch.hub, partitions) == _worker_partition(key.decode(), partitions)
            assert all(ev["hubId"] == batch.hub for ev in batch.events)
            out.append(batch)
    return out


# -- pack ------------------------------------------------------------------------------------------
def test_pack_single_events_grouped_by_hub_and_source_partition() -> None:
    events = _events()
    by_part: dict[int, list[Rec]] = {0: [], 1: []}
    for i, ev in enumerate(events):
        part = i % 2
        by_part[part].append(_single(part, 100 + len(by_part[part]), ev))
    ingested, dead, stats = pack(by_part, topic=TOPIC)
    assert dead == [] and stats.dead_letters == {} and stats.carry == {}
    batches = _batches(ingested)
    # One record per (hub, source partition), events in source order with their own offsets.
    assert sorted((b.hub, b.partition) for b in batches) == sorted(
        {(ev["hubId"], i % 2) for i, ev in enumerate(events)}
    )
    source = {(r.partition, r.offset): orjson.loads(r.value) for recs in by_part.values() for r in recs}
    for b in batches:
        assert b.offsets == sorted(b.offsets) and len(set(b.offsets)) == len(b.offsets)
        for off, t, ev in zip(b.offsets, b.times, b.events, strict=True):
            src = source.pop((b.partition, off))
            assert ev["eventId"] == src["eventId"] and ev["hubId"] == b.hub
            assert t == pytest.approx(_ms(src["timestamp"]))
    assert source == {}
    assert stats.records == stats.events == len(events)
    assert stats.offsets == {0: 100 + len(by_part[0]), 1: 100 + len(by_part[1])}
    assert stats.ingested == len(ingested) and stats.ingested_bytes == sum(len(v) for _, v in ingested)


def _ms(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts).timestamp() * 1000.0


def test_pack_envelopes_keep_offsets_and_publisher_dropped() -> None:
    events = _events(hubs=2, contests=3)
    hub0 = [e for e in events if e["hubId"] == "hub-0"]
    hub1 = [e for e in events if e["hubId"] == "hub-1"]
    recs = [
        Rec(2, 7, b"hub-0", encode_envelope("hub-0", hub0[:5], publisher_dropped=3)),
        Rec(2, 8, b"hub-1", encode_envelope("hub-1", hub1)),
        _single(2, 9, hub0[5]),
        Rec(2, 10, b"hub-0", encode_envelope("hub-0", hub0[6:])),
    ]
    ingested, dead, stats = pack({2: recs}, topic=TOPIC)
    assert dead == []
    batches = {b.hub: b for b in _batches(ingested)}
    assert set(batches) == {"hub-0", "hub-1"}
    b0, b1 = batches["hub-0"], batches["hub-1"]
    assert b0.offsets == [7] * 5 + [9] + [10] * (len(hub0) - 6)
    assert [e["eventId"] for e in b0.events] == [e["eventId"] for e in hub0]
    assert b0.publisher_dropped == 3 and b1.publisher_dropped == 0
    assert b1.offsets == [8] * len(hub1) and b1.partition == 2
    assert stats.records == 4 and stats.events == len(events) and stats.offsets == {2: 11}


def test_pack_envelope_of_several_hubs_is_split_by_hub() -> None:
    events = _events(hubs=2, contests=1)
    ingested, _, _ = pack({0: [Rec(0, 3, b"k", encode_envelope("hub-0", events))]}, topic=TOPIC)
    batches = {b.hub: b for b in _batches(ingested)}
    for hub, b in batches.items():
        assert [e["eventId"] for e in b.events] == [e["eventId"] for e in events if e["hubId"] == hub]
        assert b.offsets == [3] * len(b.events)


def test_pack_dead_letters_and_carried_counts() -> None:
    events = _events(hubs=1, contests=2)
    bad = {**events[1], "participantCount": -1}
    recs = [
        Rec(1, 0, b"hub-0", b"not json{"),
        Rec(1, 1, b"hub-0", encode_envelope("hub-0", [events[0], bad, events[2]])),
        Rec(
            1,
            2,
            b"hub-0",
            orjson.dumps({"message": "telemetry.contest.batch", "hubId": "hub-0", "events": 5}),
        ),
        Rec(1, 3, None, None),
        _single(1, 4, events[3]),
    ]
    ingested, dead, stats = pack({1: recs}, topic=TOPIC, carry={"decode": 2})
    assert stats.dead_letters == {"decode": 2, "validation": 1, "envelope": 1}
    values = [orjson.loads(v) for _, v, _ in dead]
    by_offset = {v["source"]["offset"]: (v, h, k) for (k, _, h), v in zip(dead, values, strict=True)}
    v0, _, k0 = by_offset[0]
    assert (
        v0["reason"] == "decode" and base64.b64decode(v0["originalBase64"]) == b"not json{" and k0 == b"hub-0"
    )
    v1, h1, _ = by_offset[1]
    assert v1["reason"] == "validation" and v1["index"] == 1 and v1["event"]["eventId"] == bad["eventId"]
    assert any(e["field"] == "events.1.participantCount" for e in v1["errors"])
    assert dict(h1) == {"ct-reason": b"validation", "ct-source": f"{TOPIC}/1/1".encode(), "ct-index": b"1"}
    assert by_offset[2][0]["reason"] == "envelope" and by_offset[2][0]["index"] is None
    assert by_offset[3][0]["reason"] == "decode" and by_offset[3][2] is None
    # The envelope's good events are kept, at their record's offset; the counts (with the carried
    # ones) ride on the first ingested record.
    [batch] = _batches(ingested)
    assert batch.offsets == [1, 1, 4]
    assert [e["eventId"] for e in batch.events] == [
        events[0]["eventId"],
        events[2]["eventId"],
        events[3]["eventId"],
    ]
    assert batch.dead_letters == {"decode": 4, "validation": 1, "envelope": 1}
    assert stats.carry == {} and stats.offsets == {1: 5}


def test_pack_without_good_events_carries_its_dead_letter_counts() -> None:
    ingested, dead, stats = pack({0: [Rec(0, 5, None, b"\xff")]}, topic=TOPIC, carry={"validation": 1})
    assert ingested == [] and len(dead) == 1
    assert stats.carry == {"decode": 1, "validation": 1} and stats.offsets == {0: 6}
    ev = _events(hubs=1, contests=1)[0]
    ingested, _, stats = pack({0: [_single(0, 6, ev)]}, topic=TOPIC, carry=stats.carry)
    [batch] = _batches(ingested)
    assert batch.dead_letters == {"decode": 1, "validation": 1} and stats.carry == {}


def test_pack_max_batch_events_never_splits_a_source_record() -> None:
    hub0 = [e for e in _events(hubs=1, contests=6) if e["hubId"] == "hub-0"]
    recs = [_single(0, i, ev) for i, ev in enumerate(hub0[:10])]
    recs.append(Rec(0, 10, b"hub-0", encode_envelope("hub-0", hub0[10:16])))  # 6 > max 4: stays whole
    recs.append(_single(0, 11, hub0[16]))
    recs.append(Rec(0, 12, b"hub-0", encode_envelope("hub-0", hub0[17:20])))
    ingested, _, _ = pack({0: recs}, topic=TOPIC, max_batch_events=4)
    batches = _batches(ingested)
    assert [b.offsets for b in batches] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
        [10] * 6,
        [11, 12, 12, 12],
    ]
    assert [e["eventId"] for b in batches for e in b.events] == [e["eventId"] for e in hub0[:20]]


def test_pack_max_batch_bytes_splits_between_source_records() -> None:
    hub0 = [e for e in _events(hubs=1, contests=50) if e["hubId"] == "hub-0"]
    recs = [Rec(0, i, b"hub-0", encode_envelope("hub-0", hub0[i * 5 : i * 5 + 5])) for i in range(40)]
    ingested, _, _ = pack({0: recs}, topic=TOPIC, max_batch_bytes=20_000)
    batches = _batches(ingested)
    assert len(batches) > 3 and all(len(v) <= 20_000 for _, v in ingested)
    assert [o for b in batches for o in b.offsets] == [i for i in range(40) for _ in range(5)]
    for prev, nxt in itertools.pairwise(batches):
        assert prev.offsets[-1] < nxt.offsets[0]


@pytest.mark.parametrize("verbatim", [False, True], ids=["normalised", "verbatim"])
def test_an_oversized_record_is_split_between_source_records(verbatim: bool) -> None:
    """The encoded size decides in the end (the source-bytes estimate may be off). Normalised: one
    item per event; verbatim: one source value (an envelope) per source record."""
    hub0 = [e for e in _events(hubs=1, contests=10) if e["hubId"] == "hub-0"]
    chunk = _Chunk("hub-0")
    for r in range(0, len(hub0), 3):  # three events per source record
        evs, times = hub0[r : r + 3], [float(i) for i in range(r, min(r + 3, len(hub0)))]
        if verbatim:
            chunk.add(orjson.Fragment(encode_envelope("hub-0", evs)), [r // 3] * len(evs), times)
        else:
            chunk.extend(evs, r // 3, times)
    chunk.dropped = 2
    whole = encode_ingested(IngestedBatch("hub-0", 0, chunk.offsets, chunk.times, chunk.items))
    out = _records([(0, chunk)], None, {"decode": 1}, len(whole) // 3, 10**6)
    batches = _batches(out)
    assert len(batches) >= 3 and all(len(v) <= len(whole) // 3 for _, v in out)
    assert [o for b in batches for o in b.offsets] == chunk.offsets
    assert [e["eventId"] for b in batches for e in b.events] == [e["eventId"] for e in hub0]
    assert all(len(set(b.offsets)) == len(b.offsets) // 3 for b in batches[:-1])  # whole records
    assert [b.dead_letters for b in batches] == [{"decode": 1}] + [{}] * (len(batches) - 1)
    assert [b.publisher_dropped for b in batches] == [2] + [0] * (len(batches) - 1)
    assert [b.wm for b in batches] == [None] * len(batches)  # no partition count: no watermark
    # Packed for one worker partition: the records stay under the limit, the last one has ``wm``.
    out = _records([(0, chunk)], 1, {}, len(whole) // 3, 10**6)
    assert all(len(v) <= len(whole) // 3 for _, v in out)
    assert [b.wm for b in _batches(out, 1)][-1] == max(chunk.times)
    # One source record larger than the limit is sent whole.
    out = _records([(0, chunk)], None, {}, 10, 10**6)
    assert len(out) == len(hub0) // 3 + (1 if len(hub0) % 3 else 0)


def _worker_partition(hub: str, partitions: int) -> int:
    return (murmur2(hub.encode()) & 0x7FFFFFFF) % partitions


def test_pack_puts_the_watermark_on_the_last_record_of_each_worker_partition() -> None:
    events = _events(hubs=6, contests=3)
    recs: dict[int, list[Rec]] = {0: [], 1: []}
    for i, ev in enumerate(events):
        recs[i % 2].append(_single(i % 2, i, ev))
    ingested, _, _ = pack(recs, topic=TOPIC, max_batch_events=3, partitions=3)
    by_worker: dict[int, list[Any]] = {}
    for key, value in ingested:
        by_worker.setdefault(_worker_partition(key.decode(), 3), []).append(_batches([(key, value)], 3))
    assert len(by_worker) > 1
    for records in by_worker.values():
        assert len(records) > 1  # 3 events at most per record
        assert [r[-1].wm for r in records[:-1]] == [None] * (len(records) - 1)
        assert records[-1][-1].wm == max(t for r in records for b in r for t in b.times)
        assert all(b.wm is None for r in records for b in r[:-1])
    # Without the partition count (or with no events) there is no watermark.
    assert all(b.wm is None for b in _batches(pack(recs, topic=TOPIC)[0]))


def test_a_live_poll_is_one_record_per_worker_partition() -> None:
    """At live rates a poll holds an event or two per hub: packing per worker partition sends two
    records, not one per hub (faust's per-record cost is paid on the worker for each)."""
    events = _events(hubs=40, contests=1)
    recs = {0: [_single(0, i, ev) for i, ev in enumerate(events)]}
    ingested, _, stats = pack(recs, topic=TOPIC, partitions=2)
    assert len(ingested) == 2 and stats.ingested == 2
    batches = _batches(ingested, 2)
    assert len({b.hub for b in batches}) == 40
    assert sorted(e["eventId"] for b in batches for e in b.events) == sorted(e["eventId"] for e in events)
    assert len(_batches(pack(recs, topic=TOPIC)[0])) == 40  # without the partition count: per hub


def test_pack_event_time_falls_back_to_the_record_timestamp() -> None:
    ev = _events(hubs=1, contests=1)[0]
    no_ts = {k: v for k, v in ev.items() if k != "timestamp"}
    recs = [Rec(0, 0, b"hub-0", orjson.dumps(no_ts), timestamp=1_765_000_000_123), _single(0, 1, ev)]
    recs.append(Rec(0, 2, b"hub-0", encode_envelope("hub-0", [no_ts, ev]), timestamp=1_765_000_000_456))
    [batch] = _batches(pack({0: recs}, topic=TOPIC)[0])
    assert batch.times == [
        1_765_000_000_123.0,
        _ms(ev["timestamp"]),
        1_765_000_000_456.0,
        _ms(ev["timestamp"]),
    ]


# -- against the broker ----------------------------------------------------------------------------
def _topics(unique: str, partitions: int = 3) -> TopicSettings:
    return unique_topics(unique, partitions).model_copy(
        update={"ingested": f"contest.events.ingested.{unique}"}
    )


def _input(seed: int, hubs: int = 5, contests: int = 40) -> tuple[list[tuple[bytes | None, bytes]], int]:
    """Single-event records and envelopes of one hub, mixed; and how many events they hold."""
    events = make_events(hubs=hubs, contests_per_hub=contests, seed=seed)
    out: list[tuple[bytes | None, bytes]] = []
    i = 0
    while i < len(events):
        hub = events[i]["hubId"]
        if i % 7 == 3:
            group = [e for e in events[i : i + 6] if e["hubId"] == hub]
            out.append((hub.encode(), encode_envelope(hub, group, publisher_dropped=1 if i % 2 else 0)))
            i += len(group)
        else:
            out.append((hub.encode(), orjson.dumps(events[i])))
            i += 1
    return out, len(events)


async def _produce(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send ``records`` (timestamps: now); their (partition, offset), in order."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]
    finally:
        await producer.stop()


def _expected(
    records: list[tuple[bytes | None, bytes]], where: list[tuple[int, int]]
) -> dict[tuple[int, int, int], str]:
    """(source partition, offset, index within the record) -> eventId of every valid event."""
    out = {}
    for (_, value), (part, off) in zip(records, where, strict=True):
        doc = orjson.loads(value)
        items = doc["events"] if doc.get("message") == "telemetry.contest.batch" else [doc]
        for idx, ev in enumerate(items):
            out[(part, off, idx)] = ev["eventId"]
    return out


def _seen(records: list[ConsumerRecord[Any, Any]], partitions: int) -> Counter[tuple[int, int, int, str]]:
    """(source partition, offset, index within the record, eventId) of every ingested event."""
    seen: Counter[tuple[int, int, int, str]] = Counter()
    for r in records:
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % partitions  # the default partitioner
        for b in _batches([(r.key, r.value)], partitions):
            index: Counter[int] = Counter()
            for off, ev in zip(b.offsets, b.events, strict=True):
                seen[(b.partition, off, index[off], ev["eventId"])] += 1
                index[off] += 1
    return seen


async def _read(
    bootstrap: str, topic: str, done: Any, *, timeout: float = 90.0, alive: Any = None, idle: float = 0.0
) -> list[ConsumerRecord[Any, Any]]:
    """Read ``topic`` from the start (read_committed) until ``done(records)`` (then ``idle`` more
    seconds to catch extras) or the deadline."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await consumer.start()
    out: list[ConsumerRecord[Any, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(records)
            if done(out):
                end = time.monotonic() + idle
                while time.monotonic() < end:
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        out.extend(records)
                return out
            if alive is not None and not alive():
                raise AssertionError("the ingest stage died")
    finally:
        await consumer.stop()
    raise AssertionError(f"{topic}: condition not met within {timeout}s ({len(out)} records)")


def _event_count(records: list[ConsumerRecord[Any, Any]]) -> int:
    return sum(len(b.offsets) for r in records for b in parse_ingested(orjson.loads(r.value)) or ())


async def _committed(kafka: KafkaSettings, topic: str, group: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets on ``topic`` (partitions that have one)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        committed = {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()
    return {p: o for p, o in committed.items() if o is not None}


def _ends(where: list[tuple[int, int]]) -> dict[int, int]:
    """Last offset + 1 per partition of the records produced (Tansu's ListOffsets lags behind)."""
    out: dict[int, int] = {}
    for part, off in where:
        out[part] = max(out.get(part, 0), off + 1)
    return out


@pytest.mark.kafka
async def test_stage_in_process_mixed_input_and_dead_letters(
    kafka_settings: KafkaSettings, kafka_broker: Any, unique: str
) -> None:
    topics = _topics(unique)
    await ensure_topics(kafka_settings, pipeline_topics(topics))
    good, n_events = _input(seed=11)
    bad_event = {**make_events(hubs=1, contests_per_hub=1)[0], "participantCount": -5}
    envelope_events = make_events(hubs=1, contests_per_hub=1, seed=3)
    bad: list[tuple[bytes | None, bytes]] = [
        (b"hub-0", b"{not json"),
        (b"hub-0", orjson.dumps(bad_event)),
        (b"hub-0", encode_envelope("hub-0", [envelope_events[0], bad_event, envelope_events[1]])),
    ]
    records = good[:50] + bad + good[50:]
    where = await _produce(kafka_broker.bootstrap, topics.events, records)
    expected = _expected(good[:50] + good[50:], where[:50] + where[53:])
    p_env, o_env = where[52]
    expected[(p_env, o_env, 0)] = envelope_events[0]["eventId"]
    expected[(p_env, o_env, 1)] = envelope_events[1]["eventId"]  # index 1 of the good ones
    n_good = n_events + 2

    settings = IngestSettings(
        group_id=f"ingest-{unique}",
        max_poll_records=40,
        max_batch_events=25,
        instance_id=unique,
        transactions="auto",  # exactly once where the broker has transactions (the default is off)
    )
    stage = IngestStage(kafka_settings, topics, settings)
    await stage.start()
    assert stage.transactional == (not kafka_broker.is_tansu)
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        out = await _read(
            kafka_broker.bootstrap,
            topics.ingested,
            lambda rs: _event_count(rs) >= n_good,
            alive=lambda: not task.done(),
        )
    finally:
        stop.set()
        await task
        await stage.stop()
    seen = _seen(out, topics.partitions)
    assert set(seen) == {(p, o, i, e) for (p, o, i), e in expected.items()}
    assert all(n == 1 for n in seen.values())  # one run, no crash: exactly once in both modes
    last: dict[int, ConsumerRecord[Any, Any]] = {}
    for r in out:
        if r.partition not in last or r.offset > last[r.partition].offset:
            last[r.partition] = r
    assert all(orjson.loads(r.value).get("wm") is not None for r in last.values())
    assert stage.counters.events == n_good and stage.counters.records == len(records)
    batches = [b for r in out for b in parse_ingested(orjson.loads(r.value)) or ()]
    assert sum(b.publisher_dropped for b in batches if b) == sum(
        orjson.loads(v).get("publisherDropped", 0) for _, v in good
    )
    carried: Counter[str] = Counter()
    for b in batches:
        assert b is not None
        carried.update(b.dead_letters)
    assert carried == {"decode": 1, "validation": 2}

    dlq = await _read(kafka_broker.bootstrap, topics.dlq, lambda rs: len(rs) >= 3, timeout=30)
    values = sorted((orjson.loads(r.value) for r in dlq), key=lambda v: v["source"]["offset"])
    assert len(values) == 3
    by_source = {(v["source"]["partition"], v["source"]["offset"]): v for v in values}
    dec = by_source[where[50]]
    assert dec["reason"] == "decode" and base64.b64decode(dec["originalBase64"]) == b"{not json"
    single = by_source[where[51]]
    assert (
        single["reason"] == "validation"
        and single["index"] is None
        and single["source"]["topic"] == topics.events
    )
    env = by_source[where[52]]
    assert env["reason"] == "validation" and env["index"] == 1 and env["event"]["participantCount"] == -5

    committed = await _committed(kafka_settings, topics.events, settings.group_id, topics.partitions)
    assert committed == _ends(where)


def _env(bootstrap: str, topics: TopicSettings, unique: str) -> dict[str, str]:
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CT_TOPIC_EVENTS": topics.events,
        "CT_TOPIC_DLQ": topics.dlq,
        "CT_TOPIC_RECORDS": topics.records,
        "CT_TOPIC_WINDOWS": topics.windows,
        "CT_TOPIC_INGESTED": topics.ingested,
        "CT_TOPIC_PARTITIONS": str(topics.partitions),
        "CT_INGEST_GROUP_ID": f"ingest-{unique}",
        "CT_INGEST_INSTANCE_ID": unique,  # a restart aborts the killed run's open transaction
        "CT_INGEST_TRANSACTIONS": "auto",
        "CT_INGEST_MAX_POLL_RECORDS": "100",
        "CT_INGEST_LOG_INTERVAL_S": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "ingest"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.kafka
@pytest.mark.timeout(300)
async def test_cli_killed_mid_stream_loses_nothing(
    kafka_settings: KafkaSettings, kafka_broker: Any, unique: str, tmp_path: Path
) -> None:
    topics = _topics(unique)
    await ensure_topics(kafka_settings, pipeline_topics(topics))
    records, _ = _input(seed=5, hubs=8, contests=150)
    first, rest = records[: len(records) // 3], records[len(records) // 3 :]
    bootstrap = kafka_broker.bootstrap
    where = await _produce(bootstrap, topics.events, first)
    env, log = _env(bootstrap, topics, unique), tmp_path / "ingest.log"
    procs = [_start(env, log)]
    try:
        await _read(bootstrap, topics.ingested, lambda rs: len(rs) > 0, alive=lambda: procs[0].poll() is None)

        async def produce_slowly() -> list[tuple[int, int]]:
            out = []
            for i in range(0, len(rest), 200):
                out += await _produce(bootstrap, topics.events, rest[i : i + 200])
                await asyncio.sleep(0.1)
            return out

        producing = asyncio.create_task(produce_slowly())
        await asyncio.sleep(1.0)
        assert not producing.done(), "produce more records: the kill must land mid-stream"
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        procs.append(_start(env, log))
        where += await producing
        expected = _expected(records, where)
        n_events = len(expected)

        def complete(rs: list[ConsumerRecord[Any, Any]]) -> bool:
            return _event_count(rs) >= n_events and {
                (p, o, i) for p, o, i, _ in _seen(rs, topics.partitions)
            } >= set(expected)

        out = await _read(
            bootstrap, topics.ingested, complete, timeout=150, alive=lambda: procs[1].poll() is None
        )
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    text = log.read_text(errors="replace")
    # At-least-once: the union equals the input (every event, at its offset and index, no extras).
    seen = _seen(out, topics.partitions)
    assert {(p, o, i, e) for p, o, i, e in seen} == {(p, o, i, e) for (p, o, i), e in expected.items()}
    if not kafka_broker.is_tansu:
        # Transactions: the killed run's open transaction was aborted, committed ones were not redone.
        assert "transactional id" in text
        duplicated = [k for k, n in seen.items() if n > 1]
        assert duplicated == [], f"{len(duplicated)} events twice, e.g. {duplicated[:3]}"
        # And nothing more became visible after the stage stopped.
        again = await _read(
            bootstrap, topics.ingested, lambda rs: _event_count(rs) >= n_events, timeout=30, idle=2.0
        )
        assert _event_count(again) == n_events
    committed = await _committed(kafka_settings, topics.events, f"ingest-{unique}", topics.partitions)
    assert committed == _ends(where)
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.parametrize("module", ["streams", "contest_telemetry"])
def test_a_bad_setting_is_one_line_and_exit_1(module: str) -> None:
    env = {**os.environ, "CT_INGEST_MAX_BATCH_EVENTS": "0"}
    done = subprocess.run(
        [sys.executable, "-m", module, "ingest"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.decode().splitlines() == [
        "ingest: invalid setting CT_INGEST_MAX_BATCH_EVENTS='0': Input should be greater than or equal to 1"
    ]


def test_pack_dead_letters_a_record_whose_decoding_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last-resort guard of the ingest stage: an unexpected exception on one record sends it to
    the DLQ with reason 'processing' and the records beside it are packed as usual."""
    import streams.ingest as ingest_mod

    real = ingest_mod.decode_events

    def decode(value: bytes | None) -> Any:
        if value == b'{"boom":1}':
            raise RuntimeError("injected")
        return real(value)

    monkeypatch.setattr(ingest_mod, "decode_events", decode)
    good = {"message": "telemetry.contest.armed", "hubId": "h", "contestKey": "k"}
    recs = [_single(0, 0, good), Rec(0, 1, b"h", b'{"boom":1}', 0), _single(0, 2, good)]
    ingested, dead, stats = pack({0: recs}, topic="contest.events")
    assert [b.offsets for b in _batches(ingested)] == [[0, 2]]
    [(_, value, _headers)] = dead
    dl = orjson.loads(value)
    assert dl["reason"] == "processing" and "injected" in dl["error"] and dl["source"]["offset"] == 1
    assert stats.offsets == {0: 3}


def test_pack_dead_letters_events_too_far_ahead_of_their_record() -> None:
    """CT_EVENT_TIME_MAX_FUTURE_S: an event more than the window ahead of its Kafka record's
    timestamp is dead-lettered (reason 'event_time', its index in the envelope); the rest pass."""
    from contest_telemetry.schema import encode_envelope

    now = 1_700_000_000_000
    ok = {
        "message": "telemetry.contest.armed",
        "hubId": "h",
        "contestKey": "k",
        "timestamp": "2023-11-14T22:13:20Z",
    }
    ahead = dict(ok, contestKey="k2", timestamp="2033-11-14T22:13:20Z")
    recs = [
        Rec(0, 0, b"h", encode_envelope("h", [ok, ahead, ok]), now),
        Rec(0, 1, b"h", orjson.dumps(ahead), now),
    ]
    ingested, dead, _stats = pack({0: recs}, topic="contest.events", event_time=(300_000.0, None))
    assert [b.offsets for b in _batches(ingested)] == [[0, 0]]
    assert [(orjson.loads(v)["reason"], orjson.loads(v)["index"]) for _, v, _h in dead] == [
        ("event_time", 1),
        ("event_time", None),
    ]
    # without a window nothing is screened (a record without a timestamp is judged against now)
    assert len(pack({0: recs}, topic="contest.events")[1]) == 0


def test_polls_in_flight_queue_their_records_in_poll_order() -> None:
    """At-least-once keeps up to three polls in flight; their records must reach the producer in
    poll order (a hub's later events queued ahead of its earlier ones would be dropped by the
    worker's source-offset dedup). The fake producer yields at random inside send, as aiokafka
    does when its buffer is full."""
    import random

    from aiokafka import TopicPartition as TP

    rng = random.Random(5)
    queued: list[tuple[bytes | None, bytes]] = []

    class Producer:
        async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: Any = None) -> Any:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            queued.append((key, value))
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    class Consumer:
        def assignment(self) -> set[Any]:
            return {TP("contest.events", 0)}

        async def commit(self, offsets: Any) -> None:
            await asyncio.sleep(0)

    async def go() -> None:
        stage = IngestStage(KafkaSettings(), TopicSettings(), IngestSettings(transactions="off"))
        stage._producer, stage._consumer = Producer(), Consumer()  # type: ignore[assignment]
        tasks: list[asyncio.Task[Any]] = []
        for poll in range(12):
            recs = [
                _single(
                    0,
                    poll * 10 + i,
                    {"message": "telemetry.contest.armed", "hubId": "h", "contestKey": f"k{poll}-{i}"},
                )
                for i in range(10)
            ]
            ingested, dead, stats = pack({0: recs}, topic="contest.events", max_batch_events=3)
            before = tasks[-1] if tasks else None
            tasks.append(
                asyncio.create_task(
                    stage._deliver(
                        _Poll(ingested, dead, stats, {TP("contest.events", 0): poll * 10 + 10}), before
                    )
                )
            )
        await asyncio.gather(*tasks)

    asyncio.run(go())
    offsets = [o for _k, v in queued for b in parse_ingested(orjson.loads(v)) or () for o in b.offsets]
    assert offsets == sorted(offsets) and len(offsets) == 120


@pytest.mark.parametrize("form", ["single", "envelope"])
def test_verbatim_records_give_the_worker_what_normalised_ones_do(form: str) -> None:
    """Version 3 records (source values spliced in, CT_INGEST_VERBATIM) against version 2
    (normalised events, the reference): the worker's windows, contest records, counts and state
    writes are the same. The events include every lifecycle message, producer-sent and missing
    durations, optional fields absent, a float count (normalised), extra fields (the schema's
    path), an event of required fields only, and a record of two hubs (split, so normalised)."""
    from tests.streams.engine_harness import Harness

    events = make_events(hubs=3, contests_per_hub=40, send_durations=0.5, fail_ratio=0.2)
    events[5] = {**events[5], "note": "an extra field"}
    # Only the required fields (no roomId, no eventId): what a minimal hub sends.
    events[9] = {k: events[9][k] for k in ("message", "timestamp", "hubId", "contestKey")}
    events[9]["message"] = "telemetry.contest.armed"
    for i, ev in enumerate(events):
        if ev["message"].endswith("launched") and "participantCount" in ev:
            events[i] = {**ev, "participantCount": float(ev["participantCount"])}
            break
    if form == "single":
        recs = [_single(0, i, ev) for i, ev in enumerate(events)]
    else:
        groups: list[list[dict[str, Any]]] = []
        for i in range(0, len(events), 7):
            chunk = events[i : i + 7]
            hubs = {e["hubId"] for e in chunk}
            groups.extend(
                [chunk] if i == 14 else [[e for e in chunk if e["hubId"] == h] for h in sorted(hubs)]
            )
        recs = [
            Rec(0, i, g[0]["hubId"].encode(), encode_envelope(g[0]["hubId"], g)) for i, g in enumerate(groups)
        ]
    ingested: dict[bool, list[tuple[bytes, bytes]]] = {}
    for verbatim in (False, True):
        ingested[verbatim] = [
            r
            for j in range(0, len(recs), 50)  # polls of 50 records
            for r in pack({0: recs[j : j + 50]}, topic=TOPIC, partitions=2, verbatim=verbatim)[0]
        ]
    assert all(b'"v":3' in v for _, v in ingested[True]) and all(b'"v":2' in v for _, v in ingested[False])
    # Most events went in as they came, without the absent fields normalising spells out.
    size = {verbatim: sum(len(v) for _, v in records) for verbatim, records in ingested.items()}
    assert size[True] < 0.8 * size[False]
    seen = []
    for records in ingested.values():
        h = Harness(stage=True)
        offsets = {0: 0, 1: 0}
        for key, value in records:
            p = _worker_partition(key.decode(), 2)
            h.feed(p, key.decode(), value, offset=offsets[p])
            offsets[p] += 1
        h.write(h.engine.flush().writes)
        seen.append((h.windows, h.records, h.dlq, dict(h.store)))
    assert seen[0][0] and seen[0][1]
    assert seen[0] == seen[1]
