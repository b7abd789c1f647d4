"""Input built to break the monitor: long lines, deep nesting, damaged manifests and files.

Whatever the input, the monitor prints no traceback: it exits 0 with what it could read (and
says on stderr what it skipped and why) or 1 with one ``monitor: <message>`` line.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from sinks.monitor import inputs
from sinks.monitor.render import render_json
from sinks.monitor.summary import SummaryBuilder, parse_event_line

# The log, its text summary and the helpers of test_monitor_cli.py.
ROOT = Path(__file__).resolve().parents[3]

LINES = [
    {"message": "telemetry.contest.launched", "contestId": "a", "hubId": "h1", "roomId": "r", "armingDurationMs": 240,
     "participantCount": 2, "participantCapacity": 2, "timestamp": "2025-11-04T08:00:00.000Z"},
    {"message": "telemetry.contest.resolved", "contestId": "a", "hubId": "h1", "roomId": "r",
     "resolutionDurationMs": 580, "outcomeTier": "win", "timestamp": "2025-11-04T08:00:01.000Z"},
    {"message": "telemetry.contest.launched", "contestId": "b", "hubId": "h2", "roomId": "q", "armingDurationMs": 900,
     "participantCount": 3, "timestamp": "2025-11-04T09:00:00.000Z"},
    {"message": "telemetry.contest.resolved", "contestId": "b", "hubId": "h2", "roomId": "q",
     "resolutionDurationMs": 1200, "timestamp": "2025-11-04T09:00:02.000Z"},
]  # fmt: skip
NDJSON = "".join(json.dumps(line) + "\n" for line in LINES) + "junk\n\n"

TEXT = (
    "Contest Workflow Load Summary\n"
    "============================\n"
    "Contests observed: 2\n"
    "Resolved contests: 2 (workflow failures: 0)\n"
    "Arming duration p95: 900.00 ms (budget 8000 ms)\n"
    "Arming duration p50 / max: 240.00 ms / 900.00 ms\n"
    "Resolution duration p95: 1200.00 ms (budget 800 ms) ⚠\n"
    "Resolution duration p50 / max: 580.00 ms / 1200.00 ms\n"
    "Average participants: 2.50 (max 3)\n"
    "Contests with >2 participants: 1 / 2\n"
)


def monitor(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "sinks.monitor", *args],
        input=stdin,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )


def ids(result: subprocess.CompletedProcess[bytes]) -> list[Any]:
    return [contest["contestId"] for contest in json.loads(result.stdout)["raw"]["contests"]]


MIB = 1 << 20
LAUNCHED = "telemetry.contest.launched"
RESOLVED = "telemetry.contest.resolved"
FAILED = "telemetry.contest.workflowFailed"
SUMMARY_KEYS = ["totals", "durations", "participants", "raw"]


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def nested_rendering(depth: int, indent: int, leaf: str = "1") -> str:
    """How JSON.stringify(x, null, 2) lays out ``nested(depth, leaf)`` found at ``indent``."""
    opening = "".join(f"[\n{' ' * (indent + 2 * (level + 1))}" for level in range(depth))
    closing = "".join(f"\n{' ' * (indent + 2 * level)}]" for level in reversed(range(depth)))
    return opening + leaf + closing


def raw_object(**values: str) -> str:
    """A JSON object from JSON texts: ``raw_object(a="[1]")`` is ``{"a": [1]}``."""
    return "{" + ", ".join(f"{json.dumps(key)}: {value}" for key, value in values.items()) + "}"


def js(value: str) -> str:
    return json.dumps(value)


def padded_event(size: int, contest_id: str = "c") -> bytes:
    """A launched event for ``contest_id`` that is exactly ``size`` bytes long (newline excluded)."""
    head = json.dumps({"message": LAUNCHED, "contestId": contest_id, "armingDurationMs": 100, "pad": ""})
    line = head[:-2] + "x" * (size - len(head)) + '"}'
    assert len(line) == size
    return line.encode()


class LazyLine(io.RawIOBase):
    """``size`` bytes of one line (no newline), then ``tail``; never held in memory whole."""

    def __init__(self, size: int, tail: bytes) -> None:
        self.left = size
        self.tail = tail

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self.left > 0:
            count = min(self.left, len(view))
            view[:count] = b"x" * count
            self.left -= count
            return count
        count = min(len(self.tail), len(view))
        view[:count] = self.tail[:count]
        self.tail = self.tail[count:]
        return count


def stderr_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    text = result.stderr.decode("utf-8")
    assert "Traceback" not in text
    return text.splitlines()


# --- line length ------------------------------------------------------------------------


def test_lines_over_max_line_bytes_are_skipped_and_counted_on_stderr() -> None:
    stdin = NDJSON.encode() + padded_event(2000) + b"\n" + padded_event(1500, "d")
    result = monitor("--max-line-bytes", "1000", stdin=stdin)
    assert (result.returncode, result.stdout.decode("utf-8")) == (0, TEXT)
    assert stderr_lines(result) == ["monitor: skipped 2 lines longer than 1000 bytes (--max-line-bytes)"]
    # Without the flag the same lines are read.
    assert b"Contests observed: 4\n" in monitor(stdin=stdin).stdout


def test_default_cap_is_one_mib_and_json_keys_are_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "long.ndjson"
    path.write_bytes(NDJSON.encode() + padded_event(MIB, "c") + b"\n" + padded_event(MIB + 1, "d") + b"\n")
    result = monitor("--input", str(path), "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert list(summary) == SUMMARY_KEYS
    assert ids(result) == ["a", "b", "c"]
    assert stderr_lines(result) == ["monitor: skipped 1 line longer than 1048576 bytes (--max-line-bytes)"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1.5", "1e3", ""])
def test_max_line_bytes_must_be_a_positive_integer(value: str) -> None:
    result = monitor(f"--max-line-bytes={value}", stdin=NDJSON.encode())
    assert (result.returncode, result.stdout) == (1, b"")
    assert stderr_lines(result) == [f"monitor: --max-line-bytes must be a positive integer (got {value!r})"]


def _peak_while(read: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        value = read()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_long_line_is_skipped_without_being_held_in_memory() -> None:
    good = json.dumps(LINES[0]).encode()
    skips = inputs.Skips()
    stream = io.BufferedReader(LazyLine(64 * MIB, b"\n" + good + b"\n"))
    lines, peak = _peak_while(lambda: list(inputs.iter_lines(stream, skips=skips)))
    assert lines == [good]
    assert skips.long_lines == 1
    assert peak < 8 * MIB, peak


def test_a_long_line_in_gzip_is_skipped_without_being_held_in_memory(tmp_path: Path) -> None:
    good = json.dumps(LINES[0]).encode()
    path = tmp_path / "bomb.ndjson.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        for _ in range(64):
            out.write(b"x" * MIB)
        out.write(b"\n" + good)
    skips = inputs.Skips()
    lines, peak = _peak_while(lambda: list(inputs.open_lines(str(path), skips=skips)))
    assert lines == [good]
    assert skips.long_lines == 1
    assert peak < 8 * MIB, peak


def test_line_splitting_across_chunks_keeps_every_line() -> None:
    # Lines of every length around the cap, split wherever the reads fall.
    lines = [b"a" * size for size in (0, 1, 9, 10, 11, 25, 10, 0, 3)]
    data = b"\n".join(lines)
    for chunk in (1, 2, 3, 7, 10, 11, 64):
        skips = inputs.Skips(max_line_bytes=10)

        class Chunked(io.RawIOBase):
            def __init__(self) -> None:
                self.position = 0

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                piece = data[self.position : self.position + min(chunk, len(buffer))]  # noqa: B023
                buffer[: len(piece)] = piece
                self.position += len(piece)
                return len(piece)

        got = list(inputs.iter_lines(Chunked(), skips=skips))  # type: ignore[arg-type]
        assert got == [line for line in lines if len(line) <= 10], chunk
        assert skips.long_lines == 2, chunk


# --- nesting ----------------------------------------------------------------------------


def test_lines_nested_too_deeply_are_skipped_with_a_note() -> None:
    deep_event = raw_object(message=js(LAUNCHED), contestId=js("z"), x=nested(1100))
    stdin = "".join(
        [NDJSON, nested(1100), "\n", deep_event, "\n", raw_object(a='"\udcff"', b=nested(1100)) + "\n"]
    ).encode("utf-8", "surrogateescape")
    result = monitor(stdin=stdin)
    assert (result.returncode, result.stdout.decode("utf-8")) == (0, TEXT)
    assert stderr_lines(result) == ["monitor: skipped 3 lines nested deeper than 1024 levels"]


def test_parse_event_line_never_raises_on_deep_input() -> None:
    for line in (
        nested(1100).encode(),
        b"\xff" + nested(1100).encode(),
        b'{"a": "\xff", "b": ' + nested(990).encode() + b"}",
        b'{"a": "\\ud800", "b": ' + nested(1000).encode() + b"}",
        b"[" * 500_000,
        b'{"a":' * 300_000,
    ):
        event = parse_event_line(line)
        assert event is None or isinstance(event, dict)


def test_deeply_nested_fields_are_printed_like_json_stringify() -> None:
    resolved = raw_object(message=js(RESOLVED), contestId=js("a"), outcomeTier=nested(1000))
    failed = raw_object(message=js(FAILED), error=nested(1000, "2"))
    stdin = (NDJSON + resolved + "\n" + failed + "\n").encode()
    result = monitor("--json", stdin=stdin)
    assert result.returncode == 0
    assert stderr_lines(result) == []
    text = result.stdout.decode("utf-8")
    assert nested_rendering(1000, 10) in text  # raw.contests[0].outcomes[1]
    assert nested_rendering(1000, 8, "2") in text  # raw.workflowFailures[0].error
    for output in ("text", "table"):
        other = monitor("--format", output, stdin=stdin)
        assert other.returncode == 0 and stderr_lines(other) == []


def test_deeply_nested_hub_and_contest_ids() -> None:
    hub = '{"k": ' * 1000 + "1" + "}" * 1000
    stdin = (
        NDJSON
        + raw_object(message=js(FAILED), hubId=hub)
        + "\n"
        + raw_object(message=js(LAUNCHED), contestId=hub, hubId=hub, roomId=hub)
        + "\n"
    ).encode()
    for output in ("text", "json", "table"):
        result = monitor("--format", output, stdin=stdin)
        assert result.returncode == 0, output
        assert stderr_lines(result) == []
    # contestId, hubId and roomId of the contest, hubId of the failure: 999 nested objects each.
    assert monitor("--format", "json", stdin=stdin).stdout.count(b'"k": {') == 4 * 999


def test_render_json_is_not_recursive() -> None:
    value: Any = "leaf"
    for _ in range(5000):
        value = [value]
    assert render_json({"v": value}) == '{\n  "v": ' + nested_rendering(5000, 2, '"leaf"') + "\n}"


def test_rendering_keeps_the_json_stringify_layout() -> None:
    # Without floats, index-like keys or control characters, JSON.stringify(x, null, 2)
    # and json.dumps(x, indent=2, ensure_ascii=False) print the same text.
    rng = random.Random(10)

    def value(depth: int) -> Any:
        roll = rng.random()
        if depth > 6 or roll < 0.4:
            return rng.choice([None, True, False, 0, -7, 2**40, "", "é ☃", 'q"\\'])
        if roll < 0.7:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {f"k{rng.randrange(9)}": value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(300):
        sample = value(0)
        assert render_json(sample) == json.dumps(sample, indent=2, ensure_ascii=False)


def test_objects_with_many_index_keys_render_in_linear_time() -> None:
    value = {str(index): index for index in reversed(range(40_000))} | {"last": 1}
    started = time.perf_counter()
    text = render_json(value)
    assert time.perf_counter() - started < 5
    assert text.startswith('{\n  "0": 0,\n  "1": 1,') and text.endswith('"39999": 39999,\n  "last": 1\n}')


def test_integers_beyond_double_range_read_as_json_parse_reads_them() -> None:
    # JSON.parse gives Infinity (not a valid duration); the line still opens its contest.
    assert parse_event_line(b'{"a": 1' + b"0" * 5000 + b"}") == {"a": float("inf")}
    assert parse_event_line(b'{"a": -1' + b"0" * 400 + b"}") == {"a": float("-inf")}
    line = '{"message": "%s", "contestId": "big", "armingDurationMs": 1%s, "participantCount": 3}'
    builder = SummaryBuilder()
    builder.feed_lines([(line % (LAUNCHED, "0" * 5000)).encode()])
    assert [record.as_dict()["participantCount"] for record in builder.contests.values()] == [3]


# --- archive directories ----------------------------------------------------------------


def write_archive(root: Path, manifest: bytes) -> None:
    (root / "1.ndjson").write_text(json.dumps(LINES[0]) + "\n")
    (root / "2.ndjson.gz").write_bytes(gzip.compress(json.dumps(LINES[2]).encode()))
    (root / "manifest.jsonl").write_bytes(manifest)


def test_manifest_lines_that_are_not_entries_are_skipped_with_a_reason(tmp_path: Path) -> None:
    bad = [
        json.dumps({"file": "a\u0000b.ndjson"}),
        json.dumps({"file": "x" * 300 + ".ndjson"}),
        json.dumps({"file": "/".join(["d" * 200] * 30)}),
        raw_object(file=nested(1100)),
        raw_object(file=nested(900)),
        "[1, 2]",
        '{"path": "1.ndjson"}',
        "not json",
        json.dumps({"file": "1.ndjson", "pad": "x" * (80 * 1024)}),
    ]
    lines = [json.dumps({"file": "1.ndjson"}), *bad, json.dumps({"file": "2.ndjson.gz"}), '{"file": "2.nd']
    write_archive(tmp_path, "\n".join(lines).encode())
    result = monitor("--input", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert ids(result) == ["a", "b"]
    manifest = tmp_path / "manifest.jsonl"
    notes = stderr_lines(result)
    assert notes == [
        f"monitor: {manifest}:2: skipped: 'file' contains a NUL byte",
        f"monitor: {manifest}:3: skipped: 'file' is not a usable file name (File name too long)",
        f"monitor: {manifest}:4: skipped: 'file' is not a usable file name (File name too long)",
        f"monitor: {manifest}:5: skipped: nested deeper than 1024 levels",
        f"monitor: {manifest}:6: skipped: entry has no 'file'",
        f"monitor: {manifest}:7: skipped: entry is not a JSON object",
        f"monitor: {manifest}:8: skipped: entry has no 'file'",
        f"monitor: {manifest}:9: skipped: not JSON",
        f"monitor: {manifest}:10: skipped: longer than 65536 bytes",
        f"monitor: {manifest}:12: skipped: not JSON",
    ]


def test_many_bad_manifest_lines_give_a_bounded_report(tmp_path: Path) -> None:
    write_archive(tmp_path, b"junk\n" * 5000 + json.dumps({"file": "1.ndjson"}).encode() + b"\n")
    result = monitor("--input", str(tmp_path), "--json")
    assert result.returncode == 0
    assert ids(result) == ["a"]
    notes = stderr_lines(result)
    assert len(notes) == 11
    assert notes[-1] == "monitor: and 4990 more skipped manifest lines or files"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("../outside.ndjson", "is outside the archive"), ("gone.ndjson", "listed file not found")],
)
def test_manifest_entries_naming_files_the_archive_lacks_are_errors(
    tmp_path: Path, name: str, fragment: str
) -> None:
    write_archive(tmp_path, b"not json\n" + json.dumps({"file": name}).encode() + b"\n")
    result = monitor("--input", str(tmp_path))
    assert (result.returncode, result.stdout) == (1, b"")
    notes = stderr_lines(result)
    assert len(notes) == 1 and notes[0].startswith("monitor: ") and fragment in notes[0]


def test_a_manifest_entry_naming_a_symlink_loop_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "b.ndjson").symlink_to("c.ndjson")
    (tmp_path / "c.ndjson").symlink_to("b.ndjson")
    write_archive(tmp_path, json.dumps({"file": "b.ndjson"}).encode() + b"\n")
    result = monitor("--input", str(tmp_path))
    assert (result.returncode, result.stdout) == (1, b"")
    notes = stderr_lines(result)
    assert len(notes) == 1 and notes[0].startswith(
        f"monitor: {tmp_path / 'manifest.jsonl'}:1: cannot resolve"
    )


@pytest.mark.parametrize("with_manifest", [True, False])
def test_a_corrupt_file_in_an_archive_is_skipped_with_a_reason(tmp_path: Path, with_manifest: bool) -> None:
    write_archive(tmp_path, b"")
    broken = tmp_path / "0.ndjson.gz"
    broken.write_bytes(gzip.compress(json.dumps({**LINES[2], "contestId": "zz"}).encode())[:-12])
    (tmp_path / "3.ndjson.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    if with_manifest:
        names = ["0.ndjson.gz", "1.ndjson", "3.ndjson.gz", "2.ndjson.gz"]
        (tmp_path / "manifest.jsonl").write_text("".join(json.dumps({"file": n}) + "\n" for n in names))
    else:
        (tmp_path / "manifest.jsonl").unlink()
    result = monitor("--input", str(tmp_path), "--json")
    assert result.returncode == 0
    # What the truncated file held before the damage may or may not be read.
    assert [contest for contest in ids(result) if contest != "zz"] == ["a", "b"]
    notes = stderr_lines(result)
    assert len(notes) == 2
    assert notes[0].startswith(f"monitor: {broken}: corrupt, the rest of the file is skipped (")
    assert notes[1].startswith(
        f"monitor: {tmp_path / '3.ndjson.gz'}: corrupt, the rest of the file is skipped ("
    )


def test_a_corrupt_single_file_is_still_an_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.ndjson.gz"
    path.write_bytes(gzip.compress(NDJSON.encode())[:-12])
    result = monitor("--input", str(path))
    assert (result.returncode, result.stdout) == (1, b"")
    assert len(stderr_lines(result)) == 1


# --- other ways to a traceback ----------------------------------------------------------


def test_table_prints_hub_ids_that_look_like_markup() -> None:
    stdin = "".join(
        json.dumps({"message": LAUNCHED, "contestId": str(n), "hubId": hub, "armingDurationMs": 5}) + "\n"
        for n, hub in enumerate(["[/bold]", "[red]x", "[link=file:///etc]y"])
    ).encode()
    result = monitor("--format", "table", stdin=stdin)
    assert result.returncode == 0
    assert stderr_lines(result) == []
    text = result.stdout.decode("utf-8")
    assert "[/bold]" in text and "[red]x" in text and "[link=file:///etc]y" in text


def test_a_closed_stdout_is_an_error_not_a_traceback() -> None:
    big = "".join(json.dumps({**LINES[0], "contestId": f"c{n}"}) + "\n" for n in range(20_000))
    process = subprocess.Popen(
        [sys.executable, "-m", "sinks.monitor", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None and process.stdin is not None
    process.stdout.close()
    _, stderr = process.communicate(big.encode(), timeout=120)
    assert process.returncode == 1
    assert b"Traceback" not in stderr and b"Exception ignored" not in stderr
    assert stderr.decode().startswith("monitor: ") and stderr.count(b"\n") == 1


def test_an_unexpected_failure_is_one_line_and_exit_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sinks.monitor import cli

    def boom(self: Any, **kwargs: Any) -> Any:
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli.SummaryBuilder, "build", boom)
    args = argparse.Namespace(
        input=str(Path(__file__)), json=False, format=None, arming_threshold=None,
        resolution_threshold=None, fail_on_breach=False, topic=None, hub=None, since=None,
        until=None, max_line_bytes=None,
    )  # fmt: skip
    assert cli.run(args, stdout=io.StringIO()) == 1
    assert capsys.readouterr().err == "monitor: internal error: RuntimeError: kaboom\n"
