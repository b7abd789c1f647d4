"""Retention overtaking the archiver: the gap is recorded in the manifest, logged, counted, and
``archive verify`` reports it (exit 1 unless ``--allow-gaps``); chunks record the offsets they read.

The Kafka tests delete records with the admin ``delete_records`` API (what retention does, without
waiting for the broker's retention check) so the archiver's next offset is below the log start:
once while it runs (the archiver is frozen with SIGSTOP meanwhile) and once across a restart.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from contest_telemetry.settings import KafkaSettings
from sinks.archive.cli import main
from sinks.archive.manifest import MANIFEST_NAME, read_manifest
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import verify_archive
from tests.conftest import KafkaTarget, run_sync
from tests.helpers.archive_data import event
from tests.helpers.archive_proc import REPO, archiver_command, start_archiver, verify_command

LINE = orjson.dumps(event(0))


def _manifest(root: Path) -> list[dict[str, Any]]:
    path = root / MANIFEST_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _event_numbers(root: Path) -> list[int]:
    """The n of every archived ``e-<n>``, in manifest order (gap files hold no line)."""
    out: list[int] = []
    for entry in _manifest(root):
        with gzip.open(root / entry["file"], "rt") as handle:
            out += [int(json.loads(line)["eventId"][2:]) for line in handle]
    return out


# -- the store and verify, without a broker -------------------------------------------------------
def test_chunks_record_the_offsets_they_read(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=10) as store:
        for offset in (0, 1, 2):
            store.add("t", 0, offset, 0.0, [(LINE, 1.7e12)])
        store.flush_all()
        # Offsets 3..5 are transaction markers / compacted: the next chunk covers them but says
        # what it really read.
        for offset in (6, 7):
            store.add("t", 0, offset, 0.0, [(LINE, 1.7e12)])
        store.flush_all()
    entries = _manifest(tmp_path)
    assert [(e["first_offset"], e["last_offset"]) for e in entries] == [(0, 2), (3, 7)]
    assert [(e["first_read_offset"], e["last_read_offset"]) for e in entries] == [(0, 2), (6, 7)]
    assert all(e["kind"] == "chunk" for e in entries)
    assert verify_archive(tmp_path).ok


def test_a_recorded_gap_closes_the_open_chunk_and_the_next_starts_after_it(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=100) as store:
        for offset in range(5):
            store.add("t", 0, offset, 0.0, [(LINE, 1.7e12)])
        assert store.read_position("t", 0) == 5
        closed = store.record_gap("t", 0, 5, 19, "retention")
        assert [e.kind for e in closed] == ["chunk", "gap"]
        assert store.read_position("t", 0) == 20
        # The first record after the gap (same offset // chunk_records) starts a new chunk there.
        for offset in range(20, 23):
            store.add("t", 0, offset, 0.0, [(LINE, 1.7e12)])
        store.flush_all()
    entries = _manifest(tmp_path)
    assert [(e["kind"], e["first_offset"], e["last_offset"]) for e in entries] == [
        ("chunk", 0, 4),
        ("gap", 5, 19),
        ("chunk", 20, 22),
    ]
    gap = entries[1]
    assert (gap["first_missing"], gap["last_missing"], gap["reason"]) == (5, 19, "retention")
    assert gap["records"] == 0 and gap["lines"] == 0
    # A restart resumes after the gap.
    with ArchiveStore(tmp_path, chunk_records=100) as store:
        assert store.next_offset("t", 0) == 23
    report = verify_archive(tmp_path)
    assert not report.ok
    assert [(p.kind, p.topic, p.partition) for p in report.problems] == [("recorded-gap", "t", 0)]
    assert "5..19" in report.problems[0].detail and "retention" in report.problems[0].detail
    allowed = verify_archive(tmp_path, allow_gaps=True)
    assert allowed.ok and allowed.problems == []
    assert [(g["first_missing"], g["last_missing"], g["reason"]) for g in allowed.as_dict()["gaps"]] == [
        (5, 19, "retention")
    ]


def test_readers_of_the_manifest_see_no_line_for_a_gap(tmp_path: Path) -> None:
    """Every manifest line still names a file (the gap's is an empty gzip chunk), so the monitor,
    which only follows ``file``, reads an archive with a gap as it is."""
    from sinks.monitor.inputs import open_lines

    with ArchiveStore(tmp_path, chunk_records=100) as store:
        store.add("t", 0, 0, 0.0, [(LINE, 1.7e12)])
        store.record_gap("t", 0, 1, 9, "retention")
        store.add("t", 0, 10, 0.0, [(LINE, 1.7e12)])
        store.flush_all()
    assert all("file" in entry for entry in _manifest(tmp_path))
    assert list(open_lines(str(tmp_path))) == [LINE, LINE]


_CRASH_GAP = """
import sys
from pathlib import Path
from sinks.archive.store import ArchiveStore
store = ArchiveStore(Path(sys.argv[1]), chunk_records=100).open()
store.add("t", 0, 0, 0.0, [(b'{"a":1}', 1.7e12)])
store.add("t", 0, 1, 0.0, [(b'{"a":1}', 1.7e12)])
store.record_gap("t", 0, 2, 9, "retention")
"""


@pytest.mark.parametrize("crash_at", ["after-rename:2", "after-manifest:2"])
def test_sigkill_while_recording_a_gap(tmp_path: Path, crash_at: str) -> None:
    """The gap goes through the chunk protocol: killed after its rename it is not archived (and
    is found again by the next run); killed after its manifest line it is, exactly once."""
    env = dict(os.environ, CT_ARCHIVE_CRASH_AT=crash_at)
    done = subprocess.run(
        [sys.executable, "-c", _CRASH_GAP, str(tmp_path)], cwd=REPO, env=env, capture_output=True, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    with ArchiveStore(tmp_path, chunk_records=100) as store:
        if crash_at.startswith("after-rename"):
            assert len(store.removed) == 1 and store.next_offset("t", 0) == 2
            store.record_gap("t", 0, 2, 9, "retention")
        else:
            assert store.removed == [] and store.next_offset("t", 0) == 10
    assert [(e["kind"], e["first_offset"], e["last_offset"]) for e in _manifest(tmp_path)] == [
        ("chunk", 0, 1),
        ("gap", 2, 9),
    ]
    assert verify_archive(tmp_path, allow_gaps=True).ok


def test_gap_without_an_open_chunk(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=5) as store:
        for offset in range(5):
            store.add("t", 0, offset, 0.0, [(LINE, 1.7e12)])  # a full chunk: closed
        assert [e.kind for e in store.record_gap("t", 0, 5, 7, "retention")] == ["gap"]
        store.add("t", 0, 8, 0.0, [(LINE, 1.7e12)])
        store.flush_all()
    assert [(e["first_offset"], e["last_offset"]) for e in _manifest(tmp_path)] == [(0, 4), (5, 7), (8, 8)]
    assert verify_archive(tmp_path, allow_gaps=True).ok


def test_verify_cli_allow_gaps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ArchiveStore(tmp_path, chunk_records=100) as store:
        store.add("t", 0, 0, 0.0, [(LINE, 1.7e12)])
        store.record_gap("t", 0, 1, 9, "retention")
        store.add("t", 0, 10, 0.0, [(LINE, 1.7e12)])
        store.flush_all()
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "recorded-gap" in out and "1..9" in out
    assert main(["verify", str(tmp_path), "--allow-gaps"]) == 0
    out = capsys.readouterr().out
    assert "archive OK" in out and "1 gap" in out and "9 offsets" in out
    assert main(["verify", str(tmp_path), "--json", "--allow-gaps"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["problems"] == []
    assert report["gaps"][0] | {"file": None} == {
        "topic": "t",
        "partition": 0,
        "first_missing": 1,
        "last_missing": 9,
        "reason": "retention",
        "file": None,
    }


def test_allow_gaps_does_not_hide_an_unrecorded_gap_or_an_overlapping_gap(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=100) as store:
        for offset in range(3):
            store.add("t", 0, offset, 0.0, [(LINE, 1.7e12)])
        store.record_gap("t", 0, 3, 5, "retention")
        store.add("t", 0, 6, 0.0, [(LINE, 1.7e12)])
        store.flush_all()
    manifest = tmp_path / MANIFEST_NAME
    lines = manifest.read_bytes().splitlines(keepends=True)
    # A gap line that claims offsets a chunk holds is an overlap.
    gap = json.loads(lines[1])
    assert gap["kind"] == "gap"
    manifest.write_bytes(lines[0] + lines[2])  # the gap line lost: an unexplained gap
    kinds = [p.kind for p in verify_archive(tmp_path, allow_gaps=True).problems]
    assert kinds == ["gap", "unlisted"]
    gap.update(first_offset=2, first_missing=2)
    manifest.write_bytes(lines[0] + orjson.dumps(gap) + b"\n" + lines[2])
    kinds = [p.kind for p in verify_archive(tmp_path, allow_gaps=True).problems]
    assert "overlap" in kinds or "name" in kinds


def test_gap_entries_are_validated() -> None:
    from sinks.archive.manifest import ManifestEntry

    base = {
        "file": "t/x/t-p0-00000000000000000001-00000000000000000002.ndjson.gz",
        "topic": "t",
        "partition": 0,
        "first_offset": 1,
        "last_offset": 2,
        "records": 0,
        "lines": 0,
        "sha256": "0" * 64,
        "bytes": 20,
    }
    entry = ManifestEntry.from_obj(
        base | {"kind": "gap", "first_missing": 1, "last_missing": 2, "reason": "retention"}
    )
    assert (entry.kind, entry.reason) == ("gap", "retention")
    for bad in (
        {"kind": "gap", "first_missing": 1, "last_missing": 2},  # no reason
        {"kind": "gap", "first_missing": 0, "last_missing": 2, "reason": "retention"},  # bounds
        {"kind": "mystery"},
        {"kind": "chunk", "first_read_offset": 0, "last_read_offset": 2},  # read before first
        {"kind": "chunk", "first_read_offset": 2, "last_read_offset": 1},
    ):
        with pytest.raises(ValueError):
            ManifestEntry.from_obj(base | bad)
    # Manifests written before kinds and read offsets existed are chunks.
    old = ManifestEntry.from_obj(base)
    assert (old.kind, old.first_read_offset, old.last_read_offset) == ("chunk", None, None)


# -- against a real broker ------------------------------------------------------------------------
async def _produce(kafka: KafkaSettings, topic: str, numbers: range) -> None:
    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await producer.start()
    try:
        for n in numbers:  # one at a time: each its own offset n, in order
            await producer.send_and_wait(topic, orjson.dumps(event(n)), partition=0)
    finally:
        await producer.stop()


async def _delete_before(kafka: KafkaSettings, topic: str, offset: int) -> int:
    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await admin.start()
    try:
        low = await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(offset)})
        return low[TopicPartition(topic, 0)]
    finally:
        await admin.close()


def _wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _check_gap_archive(root: Path, topic: str, first_missing_range: range) -> dict[str, Any]:
    entries = _manifest(root)
    gaps = [e for e in entries if e["kind"] == "gap"]
    assert len(gaps) == 1, entries
    gap = gaps[0]
    assert gap["topic"] == topic and gap["partition"] == 0 and gap["reason"] == "retention"
    assert gap["first_missing"] in first_missing_range and gap["last_missing"] == 19
    first_missing = gap["first_missing"]
    # Every record outside the gap is archived exactly once; no chunk claims an offset it never read.
    assert _event_numbers(root) == [*range(first_missing), *range(20, 30)]
    chunks = [e for e in entries if e["kind"] == "chunk"]
    for chunk in chunks:
        assert chunk["first_read_offset"] == chunk["first_offset"]
        assert chunk["last_read_offset"] == chunk["last_offset"]
    assert any(c["first_offset"] == 20 for c in chunks)
    # verify: exit 1 with the gap listed, exit 0 with --allow-gaps.
    done = subprocess.run([*verify_command(root), "--json"], cwd=REPO, capture_output=True, check=False)
    assert done.returncode == 1, done.stdout
    report = json.loads(done.stdout)
    assert [p["kind"] for p in report["problems"]] == ["recorded-gap"]
    allowed = subprocess.run(
        [*verify_command(root), "--json", "--allow-gaps"], cwd=REPO, capture_output=True, check=False
    )
    assert allowed.returncode == 0, allowed.stdout
    assert json.loads(allowed.stdout)["gaps"][0]["first_missing"] == first_missing
    return gap


@pytest.mark.kafka
def test_retention_overtakes_a_running_archiver(
    kafka_broker: KafkaTarget,
    kafka_settings: KafkaSettings,
    make_topic: Any,
    unique: str,
    tmp_path: Path,
) -> None:
    topic = make_topic("gaps", partitions=1)
    run_sync(_produce(kafka_settings, topic, range(10)))
    root = tmp_path / "archive"
    command = archiver_command(
        root, kafka_broker.bootstrap, topic, "", f"g-{unique}", "--json", "--idle-flush", "1", chunk=1000
    )
    proc = start_archiver(command)
    try:
        # The idle flush writes offsets 0..9 once they are read: the archiver now waits at 10.
        _wait_for(lambda: any(e["last_offset"] == 9 for e in _manifest(root)), "offsets 0..9")
        proc.send_signal(signal.SIGSTOP)
        try:
            # While it is frozen, 20 more records arrive and retention deletes up to offset 19.
            run_sync(_produce(kafka_settings, topic, range(10, 30)))
            assert run_sync(_delete_before(kafka_settings, topic, 20)) == 20
        finally:
            proc.send_signal(signal.SIGCONT)
        _wait_for(
            lambda: any(e["first_offset"] == 20 and e["kind"] == "chunk" for e in _manifest(root)),
            "the chunk after the gap",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    # A fetch already waiting at 10 when the process froze may have returned offset 10 (or a few).
    gap = _check_gap_archive(root, topic, range(10, 20))
    assert stats["gaps"] == 1 and stats["missingOffsets"] == 20 - gap["first_missing"]
    stderr = err.decode()
    assert f"{topic}[0]: offsets {gap['first_missing']}..19" in stderr and "retention" in stderr
    assert "1 gap" in stderr  # the progress / summary line


@pytest.mark.kafka
def test_retention_overtakes_a_stopped_archiver(
    kafka_broker: KafkaTarget,
    kafka_settings: KafkaSettings,
    make_topic: Any,
    unique: str,
    tmp_path: Path,
) -> None:
    topic = make_topic("gaps", partitions=1)
    run_sync(_produce(kafka_settings, topic, range(10)))
    root = tmp_path / "archive"
    command = archiver_command(
        root, kafka_broker.bootstrap, topic, "", f"g-{unique}", "--json", "--stop-after-idle", "2", chunk=1000
    )
    first = subprocess.run(command, cwd=REPO, capture_output=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr.decode()
    assert [(e["first_offset"], e["last_offset"]) for e in _manifest(root)] == [(0, 9)]
    run_sync(_produce(kafka_settings, topic, range(10, 30)))
    assert run_sync(_delete_before(kafka_settings, topic, 20)) == 20
    second = subprocess.run(command, cwd=REPO, capture_output=True, timeout=120, check=False)
    assert second.returncode == 0, second.stderr.decode()
    stats = json.loads(second.stdout.decode().strip().splitlines()[-1])
    assert stats["gaps"] == 1 and stats["missingOffsets"] == 10
    _check_gap_archive(root, topic, range(10, 11))
    assert f"{topic}[0]: offsets 10..19" in second.stderr.decode()
    # The gap is recorded once: a third run finds nothing new to say.
    third = subprocess.run(command, cwd=REPO, capture_output=True, timeout=120, check=False)
    assert third.returncode == 0
    assert json.loads(third.stdout.decode().strip().splitlines()[-1])["gaps"] == 0
    assert len([e for e in _manifest(root) if e["kind"] == "gap"]) == 1
    assert read_manifest(root / MANIFEST_NAME).errors == []
