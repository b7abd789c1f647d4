"""Partitions added while the archiver runs, and quiet partitions: chunks close on time."""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from contest_telemetry.settings import KafkaSettings
from sinks.archive.cli import _add_arguments, _settings
from sinks.archive.manifest import MANIFEST_NAME
from sinks.archive.settings import ArchiveSettings
from sinks.archive.verify import verify_archive
from tests.conftest import KafkaTarget, run_sync
from tests.helpers.archive_data import event
from tests.helpers.archive_proc import archiver_command, start_archiver


def _manifest(root: Path) -> list[dict[str, Any]]:
    path = root / MANIFEST_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _numbers(root: Path) -> list[int]:
    out: list[int] = []
    for entry in _manifest(root):
        with gzip.open(root / entry["file"], "rt") as handle:
            out += [int(json.loads(line)["eventId"][2:]) for line in handle]
    return out


def _wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


async def _produce(kafka: KafkaSettings, topic: str, partition: int, numbers: range) -> None:
    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await producer.start()
    try:
        deadline = time.monotonic() + 30
        # Partitions created a moment ago reach the producer's metadata after a refresh.
        while partition not in await producer.partitions_for(topic):
            assert time.monotonic() < deadline, f"partition {partition} of {topic} never appeared"
            await producer.client.force_metadata_update()
            await asyncio.sleep(0.2)
        for n in numbers:
            await producer.send_and_wait(topic, orjson.dumps(event(n)), partition=partition)
    finally:
        await producer.stop()


async def _add_partitions(kafka: KafkaSettings, topic: str, total: int) -> None:
    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await admin.start()
    try:
        await admin.create_partitions({topic: NewPartitions(total_count=total)})
    finally:
        await admin.close()


@pytest.mark.kafka
def test_partitions_added_while_running_are_archived(
    kafka_broker: KafkaTarget,
    kafka_settings: KafkaSettings,
    make_topic: Any,
    unique: str,
    tmp_path: Path,
) -> None:
    topic = make_topic("grow", partitions=1)
    run_sync(_produce(kafka_settings, topic, 0, range(5)))
    root = tmp_path / "archive"
    command = archiver_command(root, kafka_broker.bootstrap, topic, "", f"g-{unique}", chunk=1000)
    proc = start_archiver([*command, "--idle-flush", "0.5", "--partition-refresh", "1"])
    try:
        _wait_for(lambda: _numbers(root) == list(range(5)), "partition 0")
        run_sync(_add_partitions(kafka_settings, topic, 3))
        run_sync(_produce(kafka_settings, topic, 1, range(5, 10)))
        run_sync(_produce(kafka_settings, topic, 2, range(10, 15)))
        # Picked up while running (no restart), from the new partitions' first offset.
        _wait_for(lambda: sorted(_numbers(root)) == list(range(15)), "partitions 1 and 2", timeout=30)
        assert proc.poll() is None
        run_sync(_produce(kafka_settings, topic, 0, range(15, 17)))  # the old partition goes on
        _wait_for(lambda: sorted(_numbers(root)) == list(range(17)), "partition 0 again", timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert {(e["partition"], e["first_offset"]) for e in _manifest(root)} >= {(1, 0), (2, 0)}
    report = verify_archive(root)
    assert report.ok, report.problems
    assert sorted(_numbers(root)) == list(range(17))


def _run_args(argv: list[str]) -> Any:
    import argparse

    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    return parser.parse_args(["run", *argv])


def test_chunks_close_on_time_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CT_ARCHIVE_IDLE_FLUSH_SECONDS", "CT_ARCHIVE_MAX_CHUNK_AGE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    settings = ArchiveSettings()
    assert settings.idle_flush_seconds == 300
    assert settings.max_chunk_age_seconds == 3600
    archive_run, _ = _settings(_run_args([]))
    assert archive_run.idle_flush == 300 and archive_run.max_chunk_age == 3600
    archive_run, _ = _settings(_run_args(["--idle-flush", "2", "--max-chunk-age", "5"]))
    assert archive_run.idle_flush == 2 and archive_run.max_chunk_age == 5
    monkeypatch.setenv("CT_ARCHIVE_IDLE_FLUSH_SECONDS", "60")
    assert _settings(_run_args([]))[0].idle_flush == 60
    for field in ("idle_flush_seconds", "max_chunk_age_seconds"):
        assert "retention" in (ArchiveSettings.model_fields[field].description or "")


@pytest.mark.kafka
def test_a_trickle_never_idle_long_enough_still_closes_chunks_by_age(
    kafka_broker: KafkaTarget,
    kafka_settings: KafkaSettings,
    make_topic: Any,
    unique: str,
    tmp_path: Path,
) -> None:
    topic = make_topic("trickle", partitions=1)
    root = tmp_path / "archive"
    command = archiver_command(root, kafka_broker.bootstrap, topic, "", f"g-{unique}", chunk=1000)
    proc = start_archiver([*command, "--idle-flush", "100", "--max-chunk-age", "1.5"])
    stop = threading.Event()

    async def trickle() -> None:
        producer = AIOKafkaProducer(**kafka_settings.aiokafka_kwargs())  # type: ignore[arg-type]
        await producer.start()
        try:
            n = 0
            while not stop.is_set() and n < 200:
                await producer.send_and_wait(topic, orjson.dumps(event(n)), partition=0)
                n += 1
                await asyncio.sleep(0.3)  # never idle for the 100 s idle flush
        finally:
            await producer.stop()

    thread = threading.Thread(target=run_sync, args=(trickle(),))
    thread.start()
    try:
        _wait_for(lambda: len(_manifest(root)) >= 2, "two chunks closed by age", timeout=40)
        assert proc.poll() is None
    finally:
        stop.set()
        thread.join(timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    numbers = _numbers(root)
    assert numbers == list(range(len(numbers)))
    assert verify_archive(root).ok
