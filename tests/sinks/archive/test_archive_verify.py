"""``archive verify`` reads lines of any length in linear time, and reports hostile manifest lines
(deep nesting, control characters, long names, ``..``, huge offsets) as one problem each."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sinks.archive import verify
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import printable, verify_archive
from tests.helpers.archive_proc import REPO, verify_command

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


# ---------------------------------------------------------------------- hostile manifest lines
_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # newline aside
_CHUNK_DIR = "t/date=2023-11-14/partition=0/"


def _with_manifest_line(root: Path, make_line: Callable[[dict[str, Any]], str]) -> None:
    """A one-chunk archive whose manifest gets ``make_line(its good entry)`` before that entry
    (not last, so it is not taken for a torn write)."""
    with ArchiveStore(root, chunk_records=10) as store:
        store.add("t", 0, 0, 0.0, [(b'{"eventId":"e-0"}', 1.7e12)])
        store.flush_all()
    manifest = root / "manifest.jsonl"
    good = manifest.read_text()
    manifest.write_text(make_line(json.loads(good)) + "\n" + good)


HOSTILE_LINES: dict[str, tuple[Callable[[dict[str, Any]], str], str, str]] = {
    # name: (manifest line from the good entry, problem kind, what the row shows)
    "nested-1000": (
        lambda e: '{"kind":"chunk","file":' + "[" * 1000 + "]" * 1000 + "}",
        "manifest",
        "line 1",
    ),
    "nested-5000": (
        lambda e: '{"kind":"chunk","file":' + "[" * 5000 + "]" * 5000 + "}",
        "manifest",
        "line 1",
    ),
    "nul-in-file": (
        lambda e: json.dumps({**e, "file": _CHUNK_DIR + "a\x00b.ndjson.gz"}),
        "bad-entry",
        "a\\x00b.ndjson.gz",
    ),
    "escape-and-bidi": (
        lambda e: json.dumps({**e, "file": _CHUNK_DIR + "a\x1b[31mred\u202eb\x07.ndjson.gz"}),
        "bad-entry",
        "a\\x1b[31mred\\u202eb\\x07",
    ),
    "name-300": (lambda e: json.dumps({**e, "file": "x" * 300}), "bad-entry", "x" * 100),
    "name-5000": (lambda e: json.dumps({**e, "file": "y" * 5000}), "bad-entry", "y" * 100),
    "dot-dot": (lambda e: json.dumps({**e, "file": "../../etc/passwd"}), "bad-entry", "../../etc/passwd"),
    "dot-dot-inside": (
        lambda e: json.dumps({**e, "file": _CHUNK_DIR + "../../../../../etc/passwd"}),
        "bad-entry",
        "etc/passwd",
    ),
    "offset-10e30": (
        lambda e: json.dumps({**e, "first_offset": 10**30, "last_offset": 10**30 + 5}),
        "manifest",
        "first_offset",
    ),
    "offset-past-int64": (lambda e: json.dumps({**e, "last_offset": 2**64}), "manifest", "last_offset"),
    "offset-negative": (lambda e: json.dumps({**e, "first_offset": -5}), "manifest", "bad bounds"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LINES))
def test_a_hostile_manifest_line_is_one_problem_without_a_traceback_or_raw_control_characters(
    tmp_path: Path, case: str
) -> None:
    make_line, kind, shown = HOSTILE_LINES[case]
    _with_manifest_line(tmp_path, make_line)
    as_json = subprocess.run(
        [*verify_command(tmp_path), "--json"], cwd=REPO, capture_output=True, timeout=60, check=False
    )
    assert as_json.returncode == 1, as_json.stderr
    assert b"Traceback" not in as_json.stderr and as_json.stderr.strip() == b""
    report = json.loads(as_json.stdout)
    assert [p["kind"] for p in report["problems"]] == [kind], report["problems"]
    assert report["files"] == 1 and report["lines"] == 1  # the good entry is still checked
    table = subprocess.run(verify_command(tmp_path), cwd=REPO, capture_output=True, timeout=60, check=False)
    assert table.returncode == 1 and b"Traceback" not in table.stderr and table.stderr.strip() == b""
    out = table.stdout.decode("utf-8")
    assert "1 problem(s)" in out and kind in out
    assert not _RAW_CONTROL.search(out), repr(_RAW_CONTROL.search(out))
    problem = report["problems"][0]
    assert shown in "".join(problem[k] or "" for k in ("file", "detail"))
    assert not _RAW_CONTROL.search(json.dumps(problem, ensure_ascii=False))


def test_a_manifest_name_that_looks_like_rich_markup_is_printed_as_is(tmp_path: Path) -> None:
    _with_manifest_line(tmp_path, lambda e: json.dumps({**e, "file": "[/bad] [bold]x"}))
    table = subprocess.run(verify_command(tmp_path), cwd=REPO, capture_output=True, timeout=60, check=False)
    assert table.returncode == 1 and b"Traceback" not in table.stderr
    assert "[/bad] [bold]x" in table.stdout.decode("utf-8")


def test_printable_escapes_control_characters_and_nothing_else() -> None:
    assert printable("a\x00b\n\u202ec\x85\x7f é ü [x] \\") == "a\\x00b\\x0a\\u202ec\\x85\\x7f é ü [x] \\"
    assert printable("t-p0-00000000000000000000.ndjson.gz") == "t-p0-00000000000000000000.ndjson.gz"
