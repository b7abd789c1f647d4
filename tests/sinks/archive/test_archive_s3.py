"""The archive on object storage, against a real S3 server (S3Proxy from its Maven jar).

Same layout and protocol as a directory (chunk PUT, then its manifest entry object, recovery from
a listing); ``verify``, the monitor and the reader take the ``s3://`` URL; a missing bucket,
refused credentials and an unreachable endpoint are one line and a non-zero exit; an outage
stops the writer after bounded retries and nothing archived is lost or doubled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from contest_telemetry.broker.process import free_port
from sinks.archive.manifest_log import ObjectManifest, entry_key
from sinks.archive.reader import ArchiveReadError, open_reader
from sinks.archive.storage import MARKER_KEY, StorageError, open_storage, parse_location
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import verify_archive
from sinks.monitor.inputs import Skips, open_lines
from tests.helpers.archive_data import event, event_ids
from tests.helpers.archive_proc import REPO

LINE = b'{"eventId":"e","hubId":"h","timestamp":"2026-01-01T00:00:00Z"}'


def _line(topic: str, partition: int, offset: int) -> list[tuple[bytes, float]]:
    body = json.dumps({"eventId": f"{topic}-{partition}-{offset}", "hubId": "h"}).encode()
    return [(body, 1.7e12)]


def _fill(store: ArchiveStore, topic: str, partition: int, offsets: range) -> None:
    for offset in offsets:
        store.add(topic, partition, offset, 1.7e12, _line(topic, partition, offset))


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "contest_telemetry.cli.main", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_location_parsing() -> None:
    assert parse_location("s3://bucket/a/b/").url == "s3://bucket/a/b"
    assert parse_location("s3://bucket").prefix == ""
    assert not parse_location("relative/dir").is_s3
    for bad in ("s3://Bad_Bucket/x", "s3://b/../x", "gs://bucket/x", "s3://bucket/x?y=1"):
        with pytest.raises(Exception, match="archive location"):
            parse_location(bad)


def test_same_layout_as_a_directory_and_every_reader_takes_the_url(s3_archive: str, tmp_path: Path) -> None:
    for root in (s3_archive, tmp_path / "local"):
        with ArchiveStore(root, chunk_records=4) as store:
            _fill(store, "contest.events", 0, range(10))
            _fill(store, "contest.events", 1, range(6))
            _fill(store, "contest.records", 0, range(3))
            store.flush_all()
    remote = open_reader(s3_archive)
    local = open_reader(str(tmp_path / "local"))
    assert [e.file for e in remote.chunks()] == sorted(e.file for e in local.chunks())
    assert [e.to_json() for e in remote.chunks()] == [e.to_json() for e in local.chunks()]
    storage = open_storage(s3_archive)
    keys = {info.key for info in storage.list_objects()}
    assert MARKER_KEY in keys and all(entry_key(e) in keys for e in remote.entries())
    report = verify_archive(s3_archive)
    assert report.ok, report.problems
    assert (report.files, report.lines) == (6, 19)
    # Per-partition order: offsets ascend within each (topic, partition).
    ids = [json.loads(r.line)["eventId"] for r in remote.records("contest.events")]
    assert ids == [f"contest.events-0-{i}" for i in range(10)] + [f"contest.events-1-{i}" for i in range(6)]
    lines = list(open_lines(s3_archive, topics=["contest.records"]))
    assert [json.loads(line)["eventId"] for line in lines] == [f"contest.records-0-{i}" for i in range(3)]
    # A reopen resumes after the last archived offset.
    with ArchiveStore(s3_archive, chunk_records=4) as store:
        assert store.next_offset("contest.events", 0) == 10 and store.removed == []


def test_crash_between_chunk_and_manifest_is_recovered(s3_archive: str) -> None:
    script = (
        "import sys\n"
        "from sinks.archive.store import ArchiveStore\n"
        "store = ArchiveStore(sys.argv[1], chunk_records=3).open()\n"
        "for offset in range(7):\n"
        "    store.add('t', 0, offset, 1.7e12, [(b'{\"eventId\":\"x%d\"}' % offset, 1.7e12)])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, s3_archive],
        cwd=REPO,
        env={**os.environ, "CT_ARCHIVE_CRASH_AT": "after-rename:2"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == -9, done.stderr
    assert [p.kind for p in verify_archive(s3_archive).problems] == ["unlisted"]
    with ArchiveStore(s3_archive, chunk_records=3) as store:
        assert len(store.removed) == 1 and store.next_offset("t", 0) == 3
        for offset in range(3, 7):
            store.add("t", 0, offset, 1.7e12, [(b'{"eventId":"x%d"}' % offset, 1.7e12)])
        store.flush_all()
    report = verify_archive(s3_archive)
    assert report.ok and report.lines == 7, report.problems


def test_corrupted_and_foreign_objects(s3_archive: str, s3_server: Any) -> None:
    with ArchiveStore(s3_archive, chunk_records=4) as store:
        _fill(store, "t", 0, range(8))
    location = parse_location(s3_archive)
    reader = open_reader(s3_archive)
    first, second = reader.chunks()
    assert location.bucket is not None
    chunk = s3_server.object_path(location.bucket, f"{location.prefix}/{first.file}")
    chunk.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    storage = open_storage(s3_archive)
    storage.put("notes/readme.txt", b"not ours")
    storage.put("_manifest/stray.json", b"{}")
    storage.put(entry_key(second), b"{not json")
    kinds = sorted({p.kind for p in verify_archive(s3_archive).problems})
    # The second chunk lost its entry object: it is unlisted now.
    assert kinds == ["foreign", "gzip", "manifest", "sha256", "size", "unlisted"], kinds
    skips = Skips()
    assert list(open_lines(s3_archive, skips=skips)) == []
    notes = "\n".join(skips.report())
    assert "stray.json: skipped: not a manifest entry object (foreign)" in notes
    assert f"{entry_key(second)}: skipped: not JSON" in notes
    assert "corrupt, the rest of the file is skipped" in notes
    with pytest.raises(ArchiveReadError, match="run `archive verify`"):
        open_reader(s3_archive).entries()


def test_outage_stops_after_bounded_retries_then_resumes(s3_archive: str, s3_server: Any) -> None:
    store = ArchiveStore(s3_archive, chunk_records=3).open()
    _fill(store, "t", 0, range(6))
    s3_server.halt()
    try:
        with pytest.raises(StorageError, match=r"failed after 3 retries \(CT_ARCHIVE_S3_MAX_RETRIES\)"):
            _fill(store, "t", 0, range(6, 9))
        assert store.storage_retries == 3
        assert store.positions[("t", 0)] == 5  # nothing past what was stored
        store.close()
    finally:
        s3_server.start()
    with ArchiveStore(s3_archive, chunk_records=3) as again:
        assert again.next_offset("t", 0) == 6
        _fill(again, "t", 0, range(6, 9))
    report = verify_archive(s3_archive)
    assert report.ok and report.lines == 9, report.problems


def _bad_inputs(s3_server: Any, s3_archive: str) -> list[tuple[str, dict[str, str], str]]:
    bucket = parse_location(s3_archive).bucket
    return [
        ("s3://no-such-bucket-ct/x", {}, "bucket 'no-such-bucket-ct' does not exist"),
        (s3_archive, {"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "refused the credentials"),
        (
            s3_archive,
            {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
            "failed after 3 retries (CT_ARCHIVE_S3_MAX_RETRIES): connection refused",
        ),
        (f"s3://{bucket}/../x", {}, "empty, '.' or '..' parts"),
    ]


def _check_bad_inputs(command: str, s3_server: Any, s3_archive: str, bootstrap: str = "") -> None:
    for url, env, message in _bad_inputs(s3_server, s3_archive):
        full_env = {
            **s3_server.env(),
            "CT_ARCHIVE_S3_RETRY_BACKOFF_SECONDS": "0.05",
            "CT_ARCHIVER_EXPORTER_ENABLED": "false",  # its "metrics at" line is not an error
            **env,
        }
        if command == "run":
            args = ["archive", "run", "--dir", url, "--bootstrap", bootstrap]
        elif command == "verify":
            args = ["archive", "verify", url]
        else:
            args = ["monitor", "--input", url]
        done = _cli(*args, env=full_env)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, (url, env, done.stderr)
        assert message in lines[0], (command, lines[0])
        assert "wrong-secret" not in done.stderr and s3_server.secret_key not in done.stderr


@pytest.mark.parametrize("command", ["verify", "monitor"])
def test_bad_bucket_credentials_endpoint_are_one_line(command: str, s3_server: Any, s3_archive: str) -> None:
    _check_bad_inputs(command, s3_server, s3_archive)


@pytest.mark.kafka
def test_archive_run_bad_bucket_credentials_endpoint_are_one_line(
    kafka_broker: Any, s3_server: Any, s3_archive: str
) -> None:
    # A broker that answers: the run gets as far as opening the archive.
    _check_bad_inputs("run", s3_server, s3_archive, kafka_broker.bootstrap)


def test_verify_cli_json_reports_the_url(s3_archive: str) -> None:
    with ArchiveStore(s3_archive, chunk_records=2) as store:
        _fill(store, "t", 0, range(5))
    done = _cli("archive", "verify", s3_archive, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Offset 4 was in the open chunk when the store closed: not archived (read again from Kafka).
    assert report["ok"] and report["root"] == s3_archive and report["files"] == 2


def test_object_manifest_keys_sort_in_offset_order(s3_archive: str) -> None:
    with ArchiveStore(s3_archive, chunk_records=1) as store:
        _fill(store, "t", 2, range(12))
        _fill(store, "t", 10, range(2))
    entries = ObjectManifest(open_storage(s3_archive)).scan().entries
    assert [(e.partition, e.first_offset) for e in entries] == [(2, i) for i in range(12)] + [
        (10, 0),
        (10, 1),
    ]


async def _produce_events(kafka: Any, topic: str, start: int, count: int) -> set[str]:
    """Single events and envelopes of 5, as a hub's publisher sends them."""
    from aiokafka import AIOKafkaProducer

    from contest_telemetry.schema import encode_envelope

    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs())
    await producer.start()
    ids: set[str] = set()
    try:
        batch: list[dict[str, Any]] = []
        for n in range(start, start + count):
            payload = event(n, hub=f"hub-{n % 3}" if n % 2 else "hub-0", timestamp=_now())
            ids.add(payload["eventId"])
            if n % 2:
                await producer.send(topic, json.dumps(payload).encode(), key=payload["hubId"].encode())
            else:
                batch.append(payload)
                if len(batch) == 5:
                    await producer.send(topic, encode_envelope("hub-0", batch), key=b"hub-0")
                    batch = []
        if batch:
            await producer.send(topic, encode_envelope("hub-0", batch), key=b"hub-0")
        await producer.flush()
    finally:
        await producer.stop()
    return ids


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _committed(kafka: Any, group: str, topic: str) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka.aiokafka_kwargs(), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            partitions = set((await consumer._client.fetch_all_metadata()).partitions_for_topic(topic) or ())
        out: dict[int, int] = {}
        for p in sorted(partitions):
            offset = await consumer.committed(TopicPartition(topic, p))
            out[p] = -1 if offset is None else offset
        return out
    finally:
        await consumer.stop()


@pytest.mark.kafka
@pytest.mark.slow
def test_object_store_outage_stops_cleanly_and_commits_nothing_unstored(
    kafka_settings: Any, make_topic: Any, s3_server: Any, s3_archive: str, unique: str
) -> None:
    from tests.conftest import run_sync
    from tests.helpers.archive_proc import archiver_command

    events = make_topic("events", partitions=2)
    records = make_topic("records", partitions=1)
    group = f"archiver-{unique}"
    produced = run_sync(_produce_events(kafka_settings, events, 0, 300))
    command = archiver_command(s3_archive, kafka_settings.bootstrap_servers, events, records, group, chunk=20)
    env = {
        **os.environ,
        "CT_ARCHIVE_S3_MAX_RETRIES": "2",
        "CT_ARCHIVE_S3_RETRY_BACKOFF_SECONDS": "0.2",
        "CT_ARCHIVER_EXPORTER_ENABLED": "false",
    }
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline and len(ObjectManifest(open_storage(s3_archive)).scan().entries) < 3
        ):
            time.sleep(0.2)
        s3_server.halt()  # the outage, while records keep coming
        produced |= run_sync(_produce_events(kafka_settings, events, 300, 200))
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if s3_server.proc is None:
            s3_server.start()
    lines = [line for line in stderr.decode().splitlines() if not line.startswith("archive: removed")]
    assert proc.returncode == 1, stderr.decode()
    assert "failed after 2 retries (CT_ARCHIVE_S3_MAX_RETRIES)" in lines[-1], lines
    # No commit past what is stored: each partition's committed offset <= its last archived + 1.
    stored: dict[int, int] = {}
    for entry in open_reader(s3_archive).chunks(events):
        stored[entry.partition] = max(stored.get(entry.partition, 0), entry.last_offset + 1)
    committed = run_sync(_committed(kafka_settings, group, events))
    assert all(offset <= stored.get(p, 0) for p, offset in committed.items()), (committed, stored)
    # The server is back: a run drains the rest, and every event is archived exactly once.
    final = subprocess.run(
        [*command, "--stop-after-idle", "3", "--json"], cwd=REPO, env=env, capture_output=True, timeout=180
    )
    assert final.returncode == 0, final.stderr.decode()
    report = verify_archive(s3_archive)
    assert report.ok, report.problems
    counts = event_ids(s3_archive)
    assert set(counts) == produced and set(counts.values()) == {1}
