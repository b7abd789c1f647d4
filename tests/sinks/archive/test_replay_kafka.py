"""``archive replay`` against a real broker: a worker fed only by a replay of the archive produces
the windows of the original run, for both input forms.

The original run: a real worker (with its ingest stage) reads the events; the real archiver
(``python -m sinks.archive run``) archives the same topic. The archive is replayed into a fresh
topic read by a second worker of its own app id and output topics; its windows must be the
original worker's, value for value. A second replay into the now non-empty topic is refused.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics
from tests.conftest import run_sync
from tests.helpers.archive_proc import REPO, archiver_command, start_archiver
from tests.helpers.kafka import unique_topics
from tests.helpers.streams_reference import check_all, make_events, reference_windows
from tests.helpers.streams_worker import WorkerProcess, produce
from tests.streams.test_worker_kafka import _wait_windows, as_records, expected_ids, results_of, tick_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]


@pytest.fixture
def workers(tmp_path: Path, kafka_settings: KafkaSettings) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def make(name: str, topics: TopicSettings, app_id: str) -> WorkerProcess:
        w = WorkerProcess(
            kafka_settings.bootstrap_servers,
            topics,
            app_id,
            tmp_path / f"data-{name}",
            tmp_path / f"{name}.log",
        )
        started.append(w)
        return w.start()

    try:
        yield make
    finally:
        for w in started:
            w.stop()


def _replay(
    root: Path, bootstrap: str, source_topic: str, target: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "contest_telemetry",
        "archive",
        "replay",
        str(root),
        "--to",
        target,
        "--source-topic",
        source_topic,
        "--bootstrap",
        bootstrap,
        "--json",
        *extra,
    ]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
            ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
            return {tp.partition: offset for tp, offset in ends.items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())


def _by_id(values: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for v in results_of(values):
        assert out.setdefault(v["windowId"], v) == v, f"{v['windowId']}: two different results"
    return out


@pytest.mark.parametrize("form", ["single", "envelope"])
def test_worker_fed_by_a_replay_equals_the_original_run(
    tmp_path: Path,
    workers: Any,
    kafka_settings: KafkaSettings,
    topic_settings: TopicSettings,
    unique: str,
    form: str,
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    replayed = unique_topics(f"{unique}-replay", topic_settings.partitions)
    # Created before its worker starts (faust would otherwise create its source topic its own way).
    run_sync(ensure_topics(kafka_settings, pipeline_topics(replayed)))
    events = make_events(hubs=4, contests_per_hub=20, span_ms=240_000, seed=23)
    ref = reference_windows(events)
    want = expected_ids(ref, topic_settings.partitions)

    original = workers("original", topic_settings, f"ct-test-{unique}-a")
    # Started now so its start-up overlaps the original run; it reads nothing until the replay.
    rebuilt = workers("rebuilt", replayed, f"ct-test-{unique}-b")
    asyncio.run(produce(bootstrap, topic_settings.events, as_records(events, form, per=15)))
    ticks = tick_records(topic_settings.partitions)
    asyncio.run(produce(bootstrap, topic_settings.events, ticks, partition_of=lambda i: i))

    root = tmp_path / "archive"
    archiver = start_archiver(
        archiver_command(
            root,
            bootstrap,
            topic_settings.events,
            "",
            f"archiver-{unique}",
            "--stop-after-idle",
            "3",
            chunk=40,
        )
    )
    try:
        _, err = archiver.communicate(timeout=120)
    finally:
        if archiver.poll() is None:
            archiver.kill()
    assert archiver.returncode == 0, err.decode(errors="replace")

    first = _wait_windows(bootstrap, topic_settings.windows, want, original.alive)
    done = _replay(root, bootstrap, topic_settings.events, replayed.events)
    assert done.returncode == 0, done.stderr
    stats = orjson.loads(done.stdout)
    assert stats["sent"] == len(events) + len(ticks) == stats["lines"]
    assert (stats["targetCreated"], stats["targetHeld"]) == (False, 0)
    assert stats["targetPartitions"] == stats["sourcePartitions"] == topic_settings.partitions
    second = _wait_windows(bootstrap, replayed.windows, want, rebuilt.alive)
    time.sleep(1.0)  # windows emitted a moment later would be extras: let them arrive
    first = _wait_windows(bootstrap, topic_settings.windows, want, original.alive)
    second = _wait_windows(bootstrap, replayed.windows, want, rebuilt.alive)

    assert check_all(results_of(first), ref) == []
    original_windows, rebuilt_windows = _by_id(first), _by_id(second)
    assert set(rebuilt_windows) == set(original_windows)
    differing = [wid for wid in original_windows if rebuilt_windows[wid] != original_windows[wid]]
    assert differing == [], f"{len(differing)} windows differ, e.g. {differing[:3]}"

    # The target now holds the replay: a second replay into it is refused, and sends nothing.
    before = _end_offsets(bootstrap, replayed.events)
    refused = _replay(root, bootstrap, topic_settings.events, replayed.events)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--force" in lines[0] and "already holds" in lines[0], refused.stderr
    assert refused.stdout == ""
    assert _end_offsets(bootstrap, replayed.events) == before

    # A target that does not exist is created with the archived partition count.
    fresh = f"{replayed.events}.fresh"
    created = _replay(
        root, bootstrap, topic_settings.events, fresh, "--hub", "hub-1", "--until", "2100-01-01"
    )
    assert created.returncode == 0, created.stderr
    made = orjson.loads(created.stdout)
    assert made["targetCreated"] is True and made["targetPartitions"] == topic_settings.partitions
    hub_1 = sum(1 for e in events if e["hubId"] == "hub-1")
    assert (made["sent"], made["filteredHub"]) == (hub_1, len(events) + len(ticks) - hub_1)
    assert sum(_end_offsets(bootstrap, fresh).values()) == hub_1
