"""``archive replay`` without a broker: reading and checking an archive, filters, bad flags.

The round trip through Kafka (and the windows of a worker fed by a replay) is in
test_replay_kafka.py.
"""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import orjson
import pytest

from contest_telemetry.cli.main import main as ct_main
from contest_telemetry.settings import KafkaSettings
from sinks.archive.cli import main
from sinks.archive.lines import extract
from sinks.archive.manifest import MANIFEST_NAME
from sinks.archive.reader import ArchiveReadError
from sinks.archive.replay import ReplayError, ReplayFilter, ReplayJob, open_archive
from sinks.archive.store import ArchiveStore
from tests.helpers.archive_data import event


def _archive(root: Path, envelope: bool = False) -> list[dict[str, object]]:
    """Events of two hubs on two partitions, written as ``archive run`` writes them."""
    events = [event(n, hub=f"hub-{n % 2}", timestamp=f"2026-05-01T10:{n:02d}:00.000Z") for n in range(12)]
    with ArchiveStore(root, chunk_records=4) as store:
        offsets = [0, 0]
        for partition in (0, 1):
            mine = [e for e in events if e["hubId"] == f"hub-{partition}"]
            values = (
                [
                    orjson.dumps(
                        {"message": "telemetry.contest.batch", "hubId": f"hub-{partition}", "events": mine}
                    )
                ]
                if envelope
                else [orjson.dumps(e) for e in mine]
            )
            for value in values:
                got = extract("events", value, 1.7e12)
                store.add("contest.events", partition, offsets[partition], 1.7e12, got.lines, got.skipped)
                offsets[partition] += 1
        store.flush_all()
    return events


@pytest.mark.parametrize("envelope", [False, True])
def test_reads_every_line_in_partition_and_offset_order(tmp_path: Path, envelope: bool) -> None:
    events = _archive(tmp_path, envelope)
    reader = open_archive(str(tmp_path))
    entries = sorted(reader.entries(), key=lambda e: (e.partition, e.first_offset))
    lines = [orjson.loads(line) for entry in entries for line in reader.lines(entry)]
    want = [e for p in (0, 1) for e in events if e["hubId"] == f"hub-{p}"]
    assert lines == want


def test_a_chunk_that_differs_from_the_manifest_is_refused(tmp_path: Path) -> None:
    _archive(tmp_path)
    reader = open_archive(str(tmp_path))
    entry = reader.entries()[0]
    path = tmp_path / entry.file
    path.write_bytes(gzip.compress(b'{"x":1}\n', mtime=0))
    with pytest.raises(ArchiveReadError, match="sha256 differs"):
        list(reader.lines(entry))


def test_a_broken_manifest_line_is_refused(tmp_path: Path) -> None:
    _archive(tmp_path)
    manifest = tmp_path / MANIFEST_NAME
    lines = manifest.read_bytes().splitlines(keepends=True)
    manifest.write_bytes(lines[0] + b"not json\n" + b"".join(lines[1:]))
    with pytest.raises(ArchiveReadError, match=r"manifest\.jsonl: line 2: .*archive verify"):
        open_archive(str(tmp_path)).entries()


def test_filters_by_hub_and_event_time() -> None:
    f = ReplayFilter(since_ms=1_000.0, until_ms=2_000.0, hubs=frozenset({"a"}))
    at = "1970-01-01T00:00:01.500Z"
    assert f.wants({"hubId": "a", "timestamp": at}) is None
    assert f.wants({"hubId": "b", "timestamp": at}) == "hub"
    assert f.wants({"hubId": "a", "timestamp": "1970-01-01T00:00:02.000Z"}) == "time"  # until is exclusive
    assert f.wants({"hubId": "a", "timestamp": "1970-01-01T00:00:01.000Z"}) is None  # since is inclusive
    assert f.wants({"hubId": "a"}) == "time"  # no event time: not in any time range
    assert ReplayFilter().wants({"hubId": "z"}) is None


def test_chunks_outside_the_time_range_are_not_read(tmp_path: Path) -> None:
    _archive(tmp_path)
    entries = open_archive(str(tmp_path)).entries()
    since = ReplayFilter(since_ms=1_777_630_000_000.0)  # 2026-05-01T10:06:40Z
    assert {e.file for e in entries if since.wants_chunk(e)} < {e.file for e in entries}
    assert all(ReplayFilter().wants_chunk(e) for e in entries)


def test_an_archive_without_the_topic_is_one_error_before_connecting(tmp_path: Path) -> None:
    _archive(tmp_path)
    job = ReplayJob(
        reader=open_archive(str(tmp_path)),
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"),  # never reached
        target="t",
        source_topic="contest.records",
    )
    with pytest.raises(
        ReplayError, match=r"holds no chunks of 'contest.records' \(topics in it: contest.events\)"
    ):
        asyncio.run(job.run())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--since", "yesterday"], "--since: not an ISO-8601 time: 'yesterday'"),
        (["--until", "2026-13-01"], "--until: not an ISO-8601 time"),
        (["--since", "2026-05-02", "--until", "2026-05-01"], "--until (2026-05-01) must be after --since"),
        (["--topic", "windows"], "argument --topic: invalid choice: 'windows'"),
        (["--to", "no spaces"], "--to: not a Kafka topic name: 'no spaces'"),
        (["--hub", ""], "--hub must not be empty"),
        (["--partitions", "0"], "argument --partitions: expected a positive integer, got '0'"),
    ],
)
def test_bad_flags_are_one_line_and_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    args = ["replay", str(tmp_path), "--to", "target", *flags]
    if "--to" in flags:
        args = ["replay", str(tmp_path), *flags]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("archive: ") and message in err[0], err
    assert ct_main(["archive", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_a_missing_archive_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(tmp_path / "nowhere"), "--to", "t", "--bootstrap", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an archive directory" in err[0], err


def test_the_summary_table_and_json_keys() -> None:
    import io

    from sinks.archive.replay import ReplayStats, render_stats

    stats = ReplayStats(
        source="/a", source_topic="contest.events", target="t", sent=5, lines=7, filtered_hub=2
    )
    stats.by_partition = {1: 3, 0: 2}
    stats.elapsed_s = 2.0
    out = io.StringIO()
    render_stats(stats, out)
    text = out.getvalue()
    assert "archive replay: contest.events -> t" in text and "sent from partition 1" in text
    data = stats.as_dict()
    assert (data["sent"], data["filteredHub"], data["eventsPerSecond"]) == (5, 2, 2.5)
    assert data["byPartition"] == {"0": 2, "1": 3}
    assert list(data)[:4] == ["source", "sourceTopic", "target", "kind"]


def test_a_bad_s3_setting_is_one_line_from_either_entry_point(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_ARCHIVE_S3_MAX_RETRIES", "many")
    args = ["replay", "s3://bucket/prefix", "--to", "t", "--bootstrap", "127.0.0.1:1"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CT_ARCHIVE_S3_MAX_RETRIES='many'" in err[0], err
