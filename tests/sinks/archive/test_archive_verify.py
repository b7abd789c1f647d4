"""``archive verify`` reads lines of any length in linear time."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest

from sinks.archive import verify
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import verify_archive

LINE_BYTES = 8 << 20


@pytest.mark.timeout(60)
def test_verify_is_linear_in_the_length_of_a_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three 8 MB lines read 256 bytes at a time: 98,304 reads. Re-joining the pending part of a
    line with each new block (quadratic) copies ~400 GB here and would take many minutes."""
    with ArchiveStore(tmp_path, chunk_records=10) as store:
        for offset in range(3):
            line = orjson.dumps({"eventId": f"e-{offset}", "blob": "x" * LINE_BYTES})
            store.add("t", 0, offset, 0.0, [(line, 1.7e12)])
        store.flush_all()
    monkeypatch.setattr(verify, "_READ", 256)
    report = verify_archive(tmp_path)
    assert report.ok, report.problems
    assert report.lines == 3


def test_line_splitting_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Block boundaries anywhere (inside a line, on a newline, after it) change nothing."""
    lines = [b'{"a":1}', b'{"b":"' + b"y" * 40 + b'"}', b"[1]", b'{"c":3}', b"{}"]
    data = b"".join(line + b"\n" for line in lines)
    for block in (1, 2, 3, 7, 8, 64, 1 << 20):
        monkeypatch.setattr(verify, "_READ", block)
        with ArchiveStore(tmp_path / f"b{block}", chunk_records=10) as store:
            store.add("t", 0, 0, 0.0, [(line, 1.7e12) for line in lines])
            store.flush_all()
        report = verify_archive(tmp_path / f"b{block}")
        assert report.lines == 5, block
        assert [(p.kind, p.detail) for p in report.problems] == [
            ("json", "1 line(s) are not JSON objects (first: line 3)")
        ], block
    # A file cut short after a whole line and a partial one.
    path = next((tmp_path / "b1").rglob("*.ndjson.gz"))
    path.write_bytes(gzip.compress(data + b'{"d":', mtime=0))
    monkeypatch.setattr(verify, "_READ", 3)
    details = [p.detail for p in verify_archive(tmp_path / "b1").problems if p.kind == "json"]
    assert "last line 6 has no newline (file cut short?)" in details
