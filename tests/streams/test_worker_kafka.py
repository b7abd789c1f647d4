"""The worker against a real broker (Apache Kafka by default, Tansu with CT_TEST_BROKER=embedded).

The test data is from November 2025: replaying it closes windows by event time (a watermark
pushed by "tick" events an hour later), never by wall-clock time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from contest_telemetry.schema import encode_envelope
from contest_telemetry.settings import KafkaSettings, TopicSettings
from tests.helpers.streams_reference import T0, P, check_all, iso, make_events, reference_windows
from tests.helpers.streams_worker import WorkerProcess, collect, produce
from tests.streams.engine_harness import envelopes

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]

CUTOFF = T0 + 3_000_000
TICK_AT = T0 + 3_600_000


def partition_of(hub: str, partitions: int) -> int:
    return (murmur2(hub.encode()) & 0x7FFFFFFF) % partitions


def tick_hub(p: int, partitions: int) -> str:
    """A hub id whose key lands on partition ``p`` (the ingest stage routes by key)."""
    return next(h for j in range(10_000) if partition_of(h := f"tick-{p}-{j}", partitions) == p)


def tick_records(partitions: int) -> list[tuple[bytes | None, bytes]]:
    out = []
    for p in range(partitions):
        hub = tick_hub(p, partitions)
        ev = {"message": P + "armed", "timestamp": iso(TICK_AT), "hubId": hub, "contestKey": "k"}
        out.append((hub.encode(), orjson.dumps(ev)))
    return out


def _key(hub: str, foreign: bool) -> bytes:
    """The record key: the hubId, or for hub-2 (``foreign``) something else a log shipper chose,
    for all of its records (so its order holds): they sit on another partition than hub-2's, and
    the ingest stage routes them by hubId. With one ingest stage the windows must not change;
    with several at different event times they may (docs/known-issues.md)."""
    return (b"shipper-key-" if foreign and hub == "hub-2" else b"") + hub.encode()


def as_records(
    events: list[dict[str, Any]], form: str, per: int = 25, *, foreign_key: bool = False
) -> list[tuple[bytes | None, bytes]]:
    """The contract's form (one event per record) or publisher envelopes."""
    if form == "single":
        return [(_key(e["hubId"], foreign_key), orjson.dumps(e)) for e in events]
    return [(_key(h, foreign_key), v) for h, v in envelopes(events, per=per)]


FORMS = pytest.mark.parametrize("form", ["single", "envelope"])


def expected_ids(ref: dict[tuple[str, int], Any], partitions: int) -> set[str]:
    ids = {f"{hub}/{start}" for hub, start in ref if hub != "_all"}
    ids |= {f"_all/{partition_of(hub, partitions)}/{start}" for hub, start in ref if hub != "_all"}
    return ids


def results_of(values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [v for v in values if v["windowStartMs"] < CUTOFF and not v["hubId"].startswith("tick")]


@pytest.fixture
def workers(
    tmp_path: Path, kafka_settings: KafkaSettings, topic_settings: TopicSettings, unique: str
) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def make(name: str = "w", **env: Any) -> WorkerProcess:
        w = WorkerProcess(
            kafka_settings.bootstrap_servers,
            topic_settings,
            f"ct-test-{unique}",
            tmp_path / f"data-{name}-{len(started)}",
            tmp_path / f"{name}.log",
            **env,
        )
        started.append(w)
        return w.start()

    try:
        yield make
    finally:
        for w in started:
            w.stop()


def _wait_windows(
    bootstrap: str, topic: str, want: set[str], alive: Any, timeout: float = 60
) -> list[dict[str, Any]]:
    seen: set[str] = set()

    def done(values: list[dict[str, Any]]) -> bool:
        seen.update(v["windowId"] for v in values)
        return want <= seen

    try:
        return asyncio.run(collect(bootstrap, topic, done, timeout=timeout, alive=alive))
    except AssertionError as exc:
        raise AssertionError(f"{exc}; missing {sorted(want - seen)[:10]}") from None


@FORMS
def test_windows_records_and_dlq_against_reference(
    workers: Any, kafka_settings: KafkaSettings, topic_settings: TopicSettings, form: str
) -> None:
    """The worker with its ingest stage (the default), fed one form, plus a few records of the
    other and bad records."""
    bootstrap = kafka_settings.bootstrap_servers
    w = workers("single")
    events = make_events(hubs=6, contests_per_hub=200, span_ms=300_000, seed=11)
    good = dict(events[0], eventId="dlq-good", hubId="hub-x")
    ref = reference_windows(sorted([*events, good], key=lambda e: e["timestamp"]))
    other = "envelope" if form == "single" else "single"
    recs = as_records(events[:-600], form, per=40, foreign_key=True)
    recs += as_records(events[-600:], other, per=40, foreign_key=True)
    bad_event = dict(events[1], participantCount="three")
    bad = [
        (b"hub-0", b"\x00\xffjunk"),
        (b"hub-0", orjson.dumps(dict(events[2], hubId=7))),
        (b"hub-x", encode_envelope("hub-x", [good, dict(bad_event, hubId="hub-x")])),
    ]
    asyncio.run(produce(bootstrap, topic_settings.events, bad + recs))
    asyncio.run(
        produce(
            bootstrap,
            topic_settings.events,
            tick_records(topic_settings.partitions),
            partition_of=lambda i: i,
        )
    )
    values = _wait_windows(bootstrap, topic_settings.windows, expected_ids(ref, 2), w.alive)
    time.sleep(1.0)
    problems = check_all(results_of(values), ref)
    assert problems == [], "\n".join(problems[:20]) + w.log()

    dlq = asyncio.run(collect(bootstrap, topic_settings.dlq, lambda v: len(v) >= 3, timeout=60))
    assert sorted((d["reason"], str(d["index"])) for d in dlq) == [
        ("decode", "None"),
        ("validation", "1"),
        ("validation", "None"),
    ]
    for d in dlq:
        assert d["source"]["topic"] == topic_settings.events and d["failedAt"]
    finished = sum(1 for e in events if e["message"] in (P + "resolved", P + "workflowFailed"))
    records = asyncio.run(
        collect(bootstrap, topic_settings.records, lambda v: len(v) >= finished, timeout=60)
    )
    assert len({r["eventId"] for r in records}) == finished
    assert w.alive()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


@FORMS
def test_two_workers_one_killed_mid_stream(
    workers: Any, kafka_settings: KafkaSettings, topic_settings: TopicSettings, form: str
) -> None:
    """SIGKILL a worker (its ingest child stops with it) and, separately, the other worker's
    ingest stage; a new worker takes over: the windows still equal the reference."""
    bootstrap = kafka_settings.bootstrap_servers
    events = make_events(hubs=8, contests_per_hub=250, span_ms=420_000, seed=5)
    ref = reference_windows(events)
    recs = as_records(events, form)
    a = workers("a")
    b = workers("b")
    third = len(recs) // 3
    asyncio.run(produce(bootstrap, topic_settings.events, recs[:third]))
    # Wait until the first windows close (both workers have state), then kill one mid-stream.
    asyncio.run(
        collect(
            bootstrap,
            topic_settings.windows,
            lambda v: len(v) >= 4,
            timeout=180,
            alive=lambda: a.alive() and b.alive(),
        )
    )
    asyncio.run(produce(bootstrap, topic_settings.events, recs[third : 2 * third]))
    a.kill()
    assert b.proc is not None
    for child in _children(b.proc.pid):  # b's ingest stage, mid-stream: b starts it again
        os.kill(child, signal.SIGKILL)
    a2 = workers("a2")
    asyncio.run(produce(bootstrap, topic_settings.events, recs[2 * third :]))
    asyncio.run(
        produce(
            bootstrap,
            topic_settings.events,
            tick_records(topic_settings.partitions),
            partition_of=lambda i: i,
        )
    )
    values = _wait_windows(
        bootstrap, topic_settings.windows, expected_ids(ref, 2), lambda: a2.alive() and b.alive(), timeout=240
    )
    time.sleep(1.0)
    problems = check_all(results_of(values), ref)
    assert problems == [], "\n".join(problems[:20]) + "\n" + a2.log() + b.log()


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()


async def _commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group`` from outside the group (it has no member: generation -1)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {TopicPartition(topic, p): o for p, o in offsets.items()}
        consumer.assign(list(tps))
        await consumer.commit(tps)
    finally:
        await consumer.stop()


def test_committed_offset_ahead_of_state_is_read_again(
    workers: Any, kafka_settings: KafkaSettings, topic_settings: TopicSettings, unique: str
) -> None:
    """The group's committed offset skips records the state never applied (what faust's dropped
    queue, commit off-by-one or an incomplete flush produce, see streams/reread.py): the worker
    reads the skipped records again, and the windows equal the reference."""
    bootstrap = kafka_settings.bootstrap_servers
    parts = topic_settings.partitions
    group = f"ct-test-{unique}"
    events = make_events(hubs=6, contests_per_hub=120, span_ms=300_000, seed=23)
    ref = reference_windows(events)
    recs: list[tuple[bytes | None, bytes]] = [(h.encode(), v) for h, v in envelopes(events, per=10)]
    half = len(recs) // 2
    first = workers("first", source="events")
    asyncio.run(produce(bootstrap, topic_settings.events, recs[:half]))
    ends = asyncio.run(_end_offsets(bootstrap, topic_settings.events, parts))
    deadline = time.monotonic() + 120
    while asyncio.run(_committed(bootstrap, group, topic_settings.events, parts)) != ends:
        assert first.alive(), first.log()
        assert time.monotonic() < deadline, f"first worker did not commit {ends}\n{first.log()}"
        time.sleep(0.5)
    first.stop()
    asyncio.run(produce(bootstrap, topic_settings.events, recs[half:]))
    new_ends = asyncio.run(_end_offsets(bootstrap, topic_settings.events, parts))
    # Move the group past half of what the state has not seen yet, in every partition.
    ahead = {p: ends[p] + (new_ends[p] - ends[p]) // 2 for p in range(parts)}
    assert all(ahead[p] > ends[p] for p in range(parts))
    asyncio.run(_commit(bootstrap, group, topic_settings.events, ahead))
    second = workers("second", source="events")
    asyncio.run(produce(bootstrap, topic_settings.events, tick_records(parts), partition_of=lambda i: i))
    values = _wait_windows(bootstrap, topic_settings.windows, expected_ids(ref, parts), second.alive)
    time.sleep(1.0)
    problems = check_all(results_of(values), ref)
    assert problems == [], "\n".join(problems[:20]) + "\n" + second.log()
    assert "read them again" in second.log()


async def _delete_up_to(bootstrap: str, topic: str, offsets: dict[int, int]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(before_offset=o) for p, o in offsets.items()}
        )
    finally:
        await admin.close()


@pytest.mark.apache_kafka
@FORMS
def test_records_deleted_by_retention_are_reported_once_not_sought_forever(
    workers: Any, kafka_settings: KafkaSettings, topic_settings: TopicSettings, unique: str, form: str
) -> None:
    """Retention deleted records the worker never read (it was down): the watchdog logs the lost
    range once and goes on; it does not seek the partition every CT_WORKER_STALL_S for good."""
    bootstrap = kafka_settings.bootstrap_servers
    parts = topic_settings.partitions
    group = f"ct-test-{unique}"
    events = make_events(hubs=4, contests_per_hub=40, span_ms=120_000, seed=3)
    recs = as_records(events, form, per=10)
    first = workers("first", source="events", stall_s=2)
    asyncio.run(produce(bootstrap, topic_settings.events, recs[: len(recs) // 2]))
    ends = asyncio.run(_end_offsets(bootstrap, topic_settings.events, parts))
    deadline = time.monotonic() + 120
    while True:
        committed = asyncio.run(_committed(bootstrap, group, topic_settings.events, parts))
        if {p: c or 0 for p, c in committed.items()} == ends:  # an empty partition has no commit
            break
        assert first.alive() and time.monotonic() < deadline, f"{committed} != {ends}\n{first.log()}"
        time.sleep(0.5)
    first.stop()
    asyncio.run(produce(bootstrap, topic_settings.events, recs[len(recs) // 2 :]))
    new_ends = asyncio.run(_end_offsets(bootstrap, topic_settings.events, parts))
    asyncio.run(_delete_up_to(bootstrap, topic_settings.events, new_ends))  # all of it, as retention would
    second = workers("second", source="events", stall_s=2)
    time.sleep(15)  # several watchdog periods
    log = second.log()
    assert second.alive(), log
    lost = [line for line in log.splitlines() if "deleted by retention" in line]
    assert 1 <= len(lost) <= parts, log
    assert "putting the partition back into fetching" not in log, log
    # and it goes on: new records are applied (the ticks close the first half's windows)
    asyncio.run(produce(bootstrap, topic_settings.events, tick_records(parts), partition_of=lambda i: i))
    asyncio.run(
        collect(
            bootstrap, topic_settings.windows, lambda v: any(w["hubId"] == "hub-0" for w in v), timeout=60
        )
    )
