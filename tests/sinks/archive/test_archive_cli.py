"""``archive run`` / ``archive verify`` as commands: exit codes, output, graceful stop, commits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contest_telemetry.settings import KafkaSettings, TopicSettings
from sinks.archive.cli import main
from sinks.archive.manifest import MANIFEST_NAME
from sinks.archive.store import ArchiveStore
from sinks.monitor.inputs import open_lines
from tests.conftest import KafkaTarget, run_sync
from tests.helpers.archive_data import archived_lines, event, record_value
from tests.helpers.archive_proc import REPO, archiver_command, start_archiver, verify_command


def _archive(root: Path) -> None:
    with ArchiveStore(root, chunk_records=3) as store:
        for offset in range(7):
            store.add("contest.events", 0, offset, 0.0, [(orjson.dumps(event(offset)), 1.7e12)])
        store.flush_all()


def test_verify_clean_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _archive(tmp_path)
    assert main(["verify", str(tmp_path)]) == 0
    assert "archive OK: 3 files, 7 lines" in capsys.readouterr().out
    assert main(["verify", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "ok": True,
        "root": str(tmp_path.resolve()),
        "files": 3,
        "lines": 7,
        "problems": [],
        "gaps": [],
    }


def test_verify_problems_exit_1_with_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _archive(tmp_path)
    first = json.loads((tmp_path / MANIFEST_NAME).read_text().splitlines()[0])["file"]
    (tmp_path / first).unlink()
    assert main(["verify", str(tmp_path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["problems"] == [
        {
            "kind": "missing",
            "file": first,
            "topic": "contest.events",
            "partition": 0,
            "detail": "file not found",
        }
    ]
    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "1 problem(s)" in out


def test_verify_subprocess_and_bad_dir(tmp_path: Path) -> None:
    _archive(tmp_path)
    done = subprocess.run(verify_command(tmp_path), cwd=REPO, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(verify_command(tmp_path / "nope"), cwd=REPO, capture_output=True, check=False)
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("archive: cannot verify")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--chunk-records", "0"], "CT_ARCHIVE_CHUNK_RECORDS='0'"),
        (["run", "--chunk-records", "many"], "CT_ARCHIVE_CHUNK_RECORDS='many'"),
        (["run", "--stop-after-idle", "-1"], "--stop-after-idle"),
        (["run", "--events-topic", "", "--records-topic", ""], "nothing to archive"),
        (["run", "--events-topic", "x", "--records-topic", "x"], "must differ"),
        (["run", "--bogus"], "unrecognized arguments"),
        (["verify"], "required"),
        ([], "choose a command"),
    ],
)
def test_bad_flags_exit_1_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("archive: ") and message in err[0], err


def test_locked_directory_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with ArchiveStore(tmp_path):
        assert main(["run", "--dir", str(tmp_path), "--bootstrap", "127.0.0.1:1"]) == 1
    assert "another archiver" in capsys.readouterr().err


async def _produce(kafka: KafkaSettings, topics: TopicSettings, count: int) -> None:
    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await producer.start()
    try:
        for n in range(count):
            await producer.send(
                topics.events, orjson.dumps(event(n, hub=f"hub-{n % 4}")), key=f"hub-{n % 4}".encode()
            )
        await producer.send(topics.records, orjson.dumps(record_value(0)), key=b"hub-0")
        await producer.send(topics.events, b"not json", key=b"hub-0")
        await producer.flush()
    finally:
        await producer.stop()


async def _committed(
    kafka: KafkaSettings, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int | None]:
    consumer = AIOKafkaConsumer(**kafka.aiokafka_kwargs(), group_id=group, enable_auto_commit=False)  # type: ignore[arg-type]
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


@pytest.mark.kafka
def test_sigterm_flushes_partial_chunks_and_commits_after_the_manifest(
    kafka_broker: KafkaTarget,
    kafka_settings: KafkaSettings,
    topic_settings: TopicSettings,
    unique: str,
    tmp_path: Path,
) -> None:
    run_sync(_produce(kafka_settings, topic_settings, 23))
    root = tmp_path / "archive"
    group = f"archiver-{unique}"
    command = archiver_command(
        root,
        kafka_broker.bootstrap,
        topic_settings.events,
        topic_settings.records,
        group,
        "--json",
        chunk=1000,
    )
    proc = start_archiver(command)
    deadline = time.monotonic() + 60
    # Nothing is written before a chunk closes; wait for the records to be consumed, then SIGTERM.
    while time.monotonic() < deadline and not list((root / ".staging").glob("*.tmp")):
        time.sleep(0.1)
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    assert stats["stoppedBy"] == "SIGTERM"
    assert stats["lines"] == 24 and stats["junkRecords"] == 1 and stats["commitFailures"] == 0
    lines = archived_lines(root)
    assert sorted(obj["eventId"] for obj in lines) == sorted([f"e-{n}" for n in range(23)] + ["r-0"])
    # Events are archived exactly as sent.
    by_id = {obj.pop("eventId"): obj for obj in lines if obj.pop("_topic") == topic_settings.events}
    assert all(dict(by_id[f"e-{n}"], eventId=f"e-{n}") == event(n, hub=f"hub-{n % 4}") for n in range(23))
    # The monitor reads the archive through the manifest.
    assert len(list(open_lines(str(root)))) == 24
    manifest = [json.loads(line) for line in (root / MANIFEST_NAME).read_text().splitlines()]
    last = {(e["topic"], e["partition"]): e["last_offset"] for e in manifest}
    committed = run_sync(_committed(kafka_settings, group, [TopicPartition(t, p) for t, p in last]))
    assert {(tp.topic, tp.partition): offset for tp, offset in committed.items()} == {
        key: value + 1 for key, value in last.items()
    }
    done = subprocess.run([*verify_command(root), "--json"], cwd=REPO, capture_output=True, check=False)
    assert done.returncode == 0, done.stdout


def test_module_entry_point_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sinks.archive", "--help"], cwd=REPO, capture_output=True, check=False
    )
    assert done.returncode == 0 and b"verify" in done.stdout


def test_run_unreachable_broker_fails_cleanly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sinks.archive", "run", "--dir", str(tmp_path), "--bootstrap", "127.0.0.1:9"],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1].startswith("archive: ")


@pytest.mark.kafka
def test_idle_flush_writes_before_stop(
    kafka_broker: KafkaTarget,
    kafka_settings: KafkaSettings,
    topic_settings: TopicSettings,
    unique: str,
    tmp_path: Path,
) -> None:
    run_sync(_produce(kafka_settings, topic_settings, 5))
    root = tmp_path / "archive"
    command = archiver_command(
        root, kafka_broker.bootstrap, topic_settings.events, topic_settings.records, f"g-{unique}", chunk=1000
    )
    proc = start_archiver([*command, "--idle-flush", "0.5", "--stop-after-idle", "20"])
    try:
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline
            and len(archived_lines(root) if (root / MANIFEST_NAME).exists() else []) < 6
        ):
            time.sleep(0.2)
        assert proc.poll() is None  # still running: the idle flush wrote the chunks, not the stop
        assert len(archived_lines(root)) == 6
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert verify_archive_ok(root)


def verify_archive_ok(root: Path) -> bool:
    from sinks.archive.verify import verify_archive

    return verify_archive(root).ok
