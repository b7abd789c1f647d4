"""Unit tests of the archive store: paths, chunk boundaries, manifest recovery, verify."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import orjson
import pytest

from sinks.archive.exceptions import ArchiveError, ArchiveLockedError, ManifestError
from sinks.archive.lines import extract
from sinks.archive.manifest import MANIFEST_NAME, read_manifest, recover_manifest
from sinks.archive.paths import chunk_relpath, date_component, parse_chunk_name, safe_component
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import verify_archive
from tests.helpers.archive_data import archived_lines, event

HOSTILE = [
    "../../etc",
    "..",
    ".",
    "",
    "a/b",
    "a\\b",
    "\x00\x1b[31m",
    "x" * 10_000,
    "/abs/path",
    ".hidden",
    "_looks-hashed",
    "con\nsole",
    "ünïcode",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_never_reach_a_path(name: str, tmp_path: Path) -> None:
    safe = safe_component(name)
    assert 1 <= len(safe) <= 100
    assert safe not in {".", ".."}
    assert not safe.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in safe)
    relative = chunk_relpath(name, 3, 10, 19, 1.7e12)
    final = (tmp_path / relative).resolve()
    assert final.is_relative_to(tmp_path.resolve())
    assert len(Path(relative).parts) == 4
    parsed = parse_chunk_name(Path(relative).name)
    assert parsed is not None and (parsed.partition, parsed.first, parsed.last) == (3, 10, 19)


def test_safe_names_are_kept_and_distinct_names_stay_distinct() -> None:
    assert safe_component("contest.events") == "contest.events"
    assert safe_component("contest.records.abc-1_2") == "contest.records.abc-1_2"
    names = ["a/b", "a_b", "a\\b", "a:b", "_a_b"]
    assert len({safe_component(n) for n in names}) == len(names)


def test_date_component_is_bounded() -> None:
    assert date_component(0) == "1970-01-01"
    assert date_component(None) == "1970-01-01"
    assert date_component(-5) == "1970-01-01"
    assert date_component(1e30) == "1970-01-01"
    assert date_component(1714557600000) == "2024-05-01"


def test_hostile_ids_inside_events_stay_inside_lines(tmp_path: Path) -> None:
    hostile = event(1, hub="../../etc/passwd\x00")
    hostile["contestId"] = "a/b/" + "x" * 10_000
    got = extract("events", orjson.dumps(hostile), 0.0)
    with ArchiveStore(tmp_path, chunk_records=1) as store:
        store.add("../evil/topic", 0, 0, 0.0, got.lines)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.resolve().is_relative_to(tmp_path.resolve()) for p in files)
    assert not any("etc" in str(p.relative_to(tmp_path)) for p in files)
    assert archived_lines(tmp_path)[0]["contestId"] == hostile["contestId"]
    assert verify_archive(tmp_path).ok


def test_extract_unpacks_envelopes_and_counts_invalid() -> None:
    good = [event(1), event(2)]
    bad = {"message": "telemetry.contest.launched"}  # no hubId, contestKey...
    envelope = {"message": "telemetry.contest.batch", "hubId": "hub-1", "events": [good[0], bad, good[1], 5]}
    got = extract("events", orjson.dumps(envelope), 1.0)
    assert [orjson.loads(line)["eventId"] for line, _ in got.lines] == ["e-1", "e-2"]
    assert got.invalid_events == 2 and got.junk_records == 0
    assert extract("events", b"not json{", 1.0).junk_records == 1
    assert extract("events", None, 1.0).junk_records == 1
    single = extract("events", orjson.dumps(good[0]), 1.0)
    assert orjson.loads(single.lines[0][0]) == good[0]
    assert single.lines[0][1] == 1714557600000.0
    assert extract("records", b"[1,2]", 1.0).junk_records == 1
    assert extract("records", b'{"a":1}', 7.0).lines == [(b'{"a":1}', 7.0)]


def _fill(store: ArchiveStore, topic: str, partition: int, offsets: range) -> list[str]:
    files: list[str] = []
    for offset in offsets:
        line = orjson.dumps(event(offset))
        for entry in store.add(topic, partition, offset, 0.0, [(line, 1714557600000.0)]):
            files.append(entry.file)
    return files


def test_chunk_boundaries_are_a_function_of_offsets(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=5) as store:
        files = _fill(store, "t", 0, range(12))
        assert [Path(f).name for f in files] == [
            f"t-p0-{0:020d}-{4:020d}.ndjson.gz",
            f"t-p0-{5:020d}-{9:020d}.ndjson.gz",
        ]
        tail = store.flush("t", 0)  # graceful stop: the tail is a file ending at the last offset
        assert tail is not None and (tail.first_offset, tail.last_offset) == (10, 11)
    assert files[0].startswith("t/date=2024-05-01/partition=0/")
    with ArchiveStore(tmp_path, chunk_records=5) as store:
        assert store.next_offset("t", 0) == 12
        # Re-delivered offsets are never archived twice.
        assert _fill(store, "t", 0, range(8, 16)) == [
            f"t/date=2024-05-01/partition=0/t-p0-{12:020d}-{14:020d}.ndjson.gz"
        ]
        store.flush_all()
    report = verify_archive(tmp_path)
    assert report.ok, report.problems
    assert report.lines == 16
    assert [obj["eventId"] for obj in archived_lines(tmp_path)] == [f"e-{i}" for i in range(16)]


def test_offsets_kafka_skips_are_covered(tmp_path: Path) -> None:
    """Transaction markers / compaction leave offset holes; the chunk covers them (no false gap)."""
    with ArchiveStore(tmp_path, chunk_records=10) as store:
        _fill(store, "t", 0, range(0, 3))
        store.flush_all()
        entries = _fill(store, "t", 0, range(6, 8))
        entries += [e.file for e in store.flush_all()]
    assert parse_chunk_name(Path(entries[0]).name).first == 3  # type: ignore[union-attr]
    assert verify_archive(tmp_path).ok


def test_directory_is_locked(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path) as _, pytest.raises(ArchiveLockedError):
        ArchiveStore(tmp_path).open()


def test_recovery_torn_manifest_tmp_and_unlisted_files(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=3) as store:
        files = _fill(store, "t", 1, range(9))
    manifest = tmp_path / MANIFEST_NAME
    data = manifest.read_bytes()
    lines = data.splitlines(keepends=True)
    # A crash while appending the third line: torn, no newline.
    manifest.write_bytes(b"".join(lines[:2]) + lines[2][:25])
    (tmp_path / ".staging" / "t-p1-00000000000000000009.tmp").write_bytes(b"half")
    assert read_manifest(manifest).torn
    with ArchiveStore(tmp_path, chunk_records=3) as store:
        assert store.removed == [files[2]]
        assert store.next_offset("t", 1) == 6
        assert manifest.read_bytes() == b"".join(lines[:2])
        assert not list((tmp_path / ".staging").iterdir())
        assert _fill(store, "t", 1, range(6, 9)) == [files[2]]
    assert verify_archive(tmp_path).ok
    assert len(archived_lines(tmp_path)) == 9


def test_torn_last_line_that_is_whole_but_invalid(tmp_path: Path) -> None:
    manifest = tmp_path / MANIFEST_NAME
    manifest.write_bytes(b'{"file": "x"}\n')
    # The last line is not a valid entry: treated as torn, cut off.
    assert recover_manifest(manifest) == []
    assert manifest.read_bytes() == b""
    manifest.write_bytes(b"garbage\n" + b'{"file": "x"}\n')
    with pytest.raises(ManifestError):
        recover_manifest(manifest)


def test_refuses_chunks_without_manifest(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=2) as store:
        _fill(store, "t", 0, range(2))
    (tmp_path / MANIFEST_NAME).unlink()
    with pytest.raises(ArchiveError, match="no manifest"):
        ArchiveStore(tmp_path).open()


def test_rewrite_after_crash_is_byte_identical(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path / "a", chunk_records=4) as store:
        first = _fill(store, "t", 0, range(4))
    with ArchiveStore(tmp_path / "b", chunk_records=4) as store:
        second = _fill(store, "t", 0, range(4))
    assert first == second
    assert (tmp_path / "a" / first[0]).read_bytes() == (tmp_path / "b" / second[0]).read_bytes()


def test_monitor_reads_the_archive(tmp_path: Path) -> None:
    from sinks.monitor.inputs import open_lines

    with ArchiveStore(tmp_path, chunk_records=4) as store:
        _fill(store, "contest.events", 0, range(10))
        store.flush_all()
    lines = [json.loads(line) for line in open_lines(str(tmp_path))]
    assert [obj["eventId"] for obj in lines] == [f"e-{i}" for i in range(10)]


# -- verify: every problem kind ------------------------------------------------------------------
def _archive(tmp_path: Path) -> tuple[Path, list[str]]:
    with ArchiveStore(tmp_path, chunk_records=4) as store:
        files = _fill(store, "t", 0, range(12)) + _fill(store, "t", 1, range(8))
    assert verify_archive(tmp_path).ok
    return tmp_path, files


def _kinds(root: Path) -> set[str]:
    return {problem.kind for problem in verify_archive(root).problems}


def test_verify_tampered_byte(tmp_path: Path) -> None:
    root, files = _archive(tmp_path)
    path = root / files[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert "sha256" in _kinds(root)


def test_verify_deleted_file(tmp_path: Path) -> None:
    root, files = _archive(tmp_path)
    (root / files[0]).unlink()
    assert _kinds(root) == {"missing"}


def test_verify_truncated_gzip(tmp_path: Path) -> None:
    root, files = _archive(tmp_path)
    path = root / files[2]
    path.write_bytes(path.read_bytes()[:-12])
    assert {"gzip", "sha256", "size"} <= _kinds(root)


def test_verify_wrong_count(tmp_path: Path) -> None:
    root, files = _archive(tmp_path)
    path = root / files[0]
    path.write_bytes(gzip.compress(b'{"a":1}\n', mtime=0))
    kinds = _kinds(root)
    assert "count" in kinds and "sha256" in kinds


def test_verify_gap_and_overlap(tmp_path: Path) -> None:
    root, _ = _archive(tmp_path)
    manifest = root / MANIFEST_NAME
    lines = manifest.read_bytes().splitlines(keepends=True)
    # Drop the middle chunk of partition 0: a gap (and its file becomes unlisted).
    manifest.write_bytes(b"".join(lines[:1] + lines[2:]))
    report = verify_archive(root)
    kinds = [p.kind for p in report.problems]
    assert kinds.count("gap") == 1 and kinds.count("unlisted") == 1
    gap = next(p for p in report.problems if p.kind == "gap")
    assert (gap.topic, gap.partition) == ("t", 0) and "4..7" in gap.detail
    # An overlapping chunk: a second archive of offsets 2..5 listed in the manifest.
    with ArchiveStore(tmp_path / "other", chunk_records=4) as store:
        _fill(store, "t", 0, range(2, 6))
        store.flush_all()
    entry = json.loads((tmp_path / "other" / MANIFEST_NAME).read_bytes().splitlines()[0])
    target = root / entry["file"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes((tmp_path / "other" / entry["file"]).read_bytes())
    manifest.write_bytes(b"".join(lines) + orjson.dumps(entry) + b"\n")
    assert "overlap" in _kinds(root)


def test_verify_unlisted_and_torn_manifest(tmp_path: Path) -> None:
    root, _ = _archive(tmp_path)
    extra = root / "t" / "date=2024-05-01" / "partition=0" / f"t-p0-{100:020d}-{101:020d}.ndjson.gz"
    extra.write_bytes(gzip.compress(b"{}\n"))
    assert _kinds(root) == {"unlisted"}
    extra.unlink()
    with (root / MANIFEST_NAME).open("ab") as handle:
        handle.write(b'{"file": "t/da')
    assert _kinds(root) == {"manifest"}


def test_verify_entry_outside_archive(tmp_path: Path) -> None:
    root, _ = _archive(tmp_path)
    manifest = root / MANIFEST_NAME
    first = json.loads(manifest.read_bytes().splitlines()[0])
    first["file"] = "../../etc/passwd"
    with manifest.open("ab") as handle:
        handle.write(orjson.dumps(first) + b"\n")
    assert "bad-entry" in _kinds(root)


def test_fsync_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    with ArchiveStore(tmp_path, chunk_records=2) as store:
        before = len(calls)
        _fill(store, "t", 0, range(2))
        # temp file, its directory (+ new dirs' parents), the manifest
        assert len(calls) - before >= 3
