"""The archiver against a real broker and real files, SIGKILLed at random points.

Each round produces more events (single events and envelopes through ContestPublisher, plus junk
and invalid records) and records, starts ``python -m sinks.archive run`` with a tiny chunk size,
and kills it: after a random delay (SIGKILL from outside) or at a named step of the chunk
protocol (the archiver SIGKILLs itself there). After each kill the archive is recovered as a
restart does and verified; at the end a clean run drains the topics and ``archive verify`` must
pass with every produced eventId archived exactly once.

The same loop runs against an archive on a real S3 server (S3Proxy, ``s3://`` URL), with fewer
random kills to keep its time modest: a chunk PUT, then its manifest entry object, then the commit.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from contest_telemetry.settings import KafkaSettings, TopicSettings
from producers import ContestPublisher, PublisherSettings
from sinks.archive.manifest_log import manifest_for
from sinks.archive.storage import open_storage
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import verify_archive
from tests.conftest import KafkaTarget, run_sync
from tests.helpers.archive_data import event, event_ids, record_value
from tests.helpers.archive_proc import archiver_command, start_archiver, verify_command

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

RANDOM_KILLS = {"local": 24, "s3": 8}
CRASH_POINTS = ["after-tmp", "after-rename", "after-manifest", "after-commit"]
HUBS = [f"hub-{i}" for i in range(6)]


async def _produce(kafka: KafkaSettings, topics: TopicSettings, round_no: int, count: int) -> set[str]:
    """Publish ``count`` events and ``count // 4`` records; return the eventIds that must be archived."""
    expected: set[str] = set()
    envelopes = PublisherSettings(batching="envelope", max_envelope_events=4, linger_ms=2, overflow="wait")
    singles = PublisherSettings(batching="single", overflow="wait")
    async with (
        ContestPublisher(kafka, envelopes, topic=topics.events) as env_pub,
        ContestPublisher(kafka, singles, topic=topics.events) as single_pub,
    ):
        for i in range(count):
            payload = event(i, hub=HUBS[i % len(HUBS)])
            payload["eventId"] = f"ev-{round_no}-{i}"
            expected.add(payload["eventId"])
            await (env_pub if i % 3 else single_pub).publish(payload)
            if i % 5 == 0:
                await env_pub.flush()
    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await producer.start()
    try:
        await producer.send_and_wait(topics.events, b"junk, not json", key=b"hub-0")
        invalid = {"message": "telemetry.contest.launched", "eventId": f"bad-{round_no}"}  # no hubId
        await producer.send_and_wait(topics.events, orjson.dumps(invalid), key=b"hub-1")
        for i in range(count // 4):
            value = record_value(i, hub=HUBS[i % len(HUBS)])
            value["eventId"] = f"rec-{round_no}-{i}"
            expected.add(value["eventId"])
            await producer.send(topics.records, orjson.dumps(value), key=value["hubId"].encode())
        await producer.send_and_wait(topics.records, b"[1, 2, 3]", key=b"hub-2")
    finally:
        await producer.stop()
    return expected


def _recover_and_check(root: Path | str, produced: set[str]) -> None:
    """What a restart does first (recovery), then the archive must verify and hold no duplicate."""
    ArchiveStore(root).open().close()
    report = verify_archive(root)
    assert report.ok, report.problems
    counts = event_ids(root)
    duplicated = [eid for eid, n in counts.items() if n > 1]
    assert not duplicated, duplicated[:10]
    assert set(counts) <= produced, sorted(set(counts) - produced)[:10]


def _manifest_lines(root: Path | str) -> int:
    """Chunks listed so far; a kill before the archiver's first start-up leaves no manifest yet."""
    if isinstance(root, str):
        return len(manifest_for(open_storage(root)).scan().entries)
    manifest = root / "manifest.jsonl"
    return len(manifest.read_bytes().splitlines()) if manifest.exists() else 0


@pytest.fixture(params=["local", "s3"])
def archive_root(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A directory, or ``s3://<fresh bucket>/archive`` on the session's S3Proxy."""
    if request.param == "s3":
        return str(request.getfixturevalue("s3_archive"))
    return tmp_path / "archive"


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    kafka_broker: KafkaTarget,
    kafka_settings: KafkaSettings,
    topic_settings: TopicSettings,
    unique: str,
    archive_root: Path | str,
) -> None:
    rng = random.Random(int(unique, 16))
    root = archive_root
    target = "s3" if isinstance(root, str) else "local"
    command = archiver_command(
        root, kafka_broker.bootstrap, topic_settings.events, topic_settings.records, f"archiver-{unique}"
    )
    produced: set[str] = set()
    kills = 0
    crash_kills = 0
    killed_mid_work = 0
    plan: list[str | None] = [None] * RANDOM_KILLS[target] + [
        f"{p}:{n}" for p in CRASH_POINTS for n in (1, 2)
    ]
    rng.shuffle(plan)
    started = time.monotonic()
    for round_no, crash_at in enumerate(plan):
        produced |= run_sync(_produce(kafka_settings, topic_settings, round_no, rng.randint(20, 90)))
        files_before = _manifest_lines(root)
        # A named crash point may not be reached (few chunks this round): that run then ends alone.
        proc = start_archiver(
            command if crash_at is None else [*command, "--stop-after-idle", "4"], crash_at=crash_at
        )
        if crash_at is None:
            time.sleep(rng.uniform(0.2, 3.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            stderr = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"round {round_no} ({crash_at}) did not end: {stderr}") from None
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        if crash_at is not None and proc.returncode == 0:
            continue
        assert proc.returncode == -signal.SIGKILL, (crash_at, proc.returncode, stderr)
        kills += 1
        crash_kills += crash_at is not None
        if _manifest_lines(root) > files_before:
            killed_mid_work += 1
        _recover_and_check(root, produced)
    # The last run drains what is left, flushes its partial chunks and exits on its own.
    final = subprocess.run(
        [*command, "--stop-after-idle", "3", "--json"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert final.returncode == 0, final.stderr.decode()
    stats = json.loads(final.stdout.decode().strip().splitlines()[-1])
    assert stats["stoppedBy"] == "idle"
    verified = subprocess.run(
        [*verify_command(root), "--json"], capture_output=True, timeout=120, check=False
    )
    assert verified.returncode == 0, verified.stdout.decode() + verified.stderr.decode()
    report = json.loads(verified.stdout)
    assert report["ok"] and report["problems"] == []
    counts = event_ids(root)
    assert set(counts) == produced, (sorted(produced - set(counts))[:10], sorted(set(counts) - produced)[:10])
    assert Counter(counts.values()) == Counter({1: len(produced)})
    assert report["lines"] == len(produced)
    enough = (20, 10) if target == "local" else (10, 4)
    assert kills >= enough[0] and killed_mid_work >= enough[1] and crash_kills >= 4, (
        kills,
        killed_mid_work,
        crash_kills,
    )
    print(
        f"\n{target}: {kills} kills ({crash_kills} at named steps, {killed_mid_work} with chunks written in that run), {report['files']} files, "
        f"{len(produced)} ids exactly once, {time.monotonic() - started:.0f}s"
    )
