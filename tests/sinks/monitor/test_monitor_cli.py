"""The monitor as users run it: a subprocess, its exit code, stdout and one-line stderr."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "contests.ndjson"
    path.write_text(NDJSON, encoding="utf-8")
    return path


def test_stdin_text_summary_exits_zero_even_when_breached() -> None:
    result = monitor(stdin=NDJSON.encode())
    assert (result.returncode, result.stdout.decode("utf-8"), result.stderr) == (0, TEXT, b"")


def test_dash_reads_stdin_too() -> None:
    assert monitor("--input", "-", stdin=NDJSON.encode()).stdout.decode("utf-8") == TEXT


def test_file_input_and_json(log: Path) -> None:
    result = monitor("--input", str(log), "--json")
    assert result.returncode == 0
    text = result.stdout.decode("utf-8")
    summary = json.loads(text)
    assert summary["durations"]["resolution"] == {
        "samples": 2, "missing": 0, "p50": 580, "p95": 1200, "max": 1200, "budget": 800, "breached": True,
    }  # fmt: skip
    assert '"p50": 580,' in text  # integers print as JavaScript prints them, not 580.0
    assert text.startswith('{\n  "totals": {\n    "contestsObserved": 2,')
    assert text.endswith("\n}\n")
    assert monitor("-i", str(log), "--format", "json").stdout == result.stdout


def test_empty_stdin() -> None:
    result = monitor(stdin=b"")
    assert result.returncode == 0
    assert result.stdout.decode().endswith("Arming duration samples: none\nResolution duration samples: none\n"
                                           "Participant data: none\n")  # fmt: skip


def test_thresholds_override_budgets(log: Path) -> None:
    result = monitor("-i", str(log), "--arming-threshold=500", "--resolution-threshold", "1500")
    text = result.stdout.decode("utf-8")
    assert "Arming duration p95: 900.00 ms (budget 500 ms) ⚠\n" in text
    assert "Resolution duration p95: 1200.00 ms (budget 1500 ms)\n" in text


def test_gzip_input(tmp_path: Path) -> None:
    path = tmp_path / "contests.ndjson.gz"
    path.write_bytes(gzip.compress(NDJSON.encode()))
    assert monitor("--input", str(path)).stdout.decode("utf-8") == TEXT
    assert monitor(stdin=path.read_bytes()).stdout.decode("utf-8") == TEXT


def test_archive_directory_with_manifest_reads_listed_files_in_order(tmp_path: Path) -> None:
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "2.ndjson.gz").write_bytes(gzip.compress(json.dumps(LINES[2]).encode()))
    (tmp_path / "1.ndjson").write_text(json.dumps(LINES[0]) + "\n")
    (tmp_path / "ignored.ndjson").write_text(json.dumps({**LINES[0], "contestId": "zzz"}) + "\n")
    manifest = [{"file": "part/2.ndjson.gz", "records": 1}, {"file": "1.ndjson"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in manifest))
    result = monitor("--input", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    assert ids(result) == ["b", "a"]


def test_topic_picks_one_topic_of_an_archive(tmp_path: Path) -> None:
    (tmp_path / "events.ndjson").write_text(json.dumps(LINES[0]) + "\n")
    (tmp_path / "records.ndjson").write_text(json.dumps(LINES[2]) + "\n")
    manifest = [
        {"file": "events.ndjson", "topic": "contest.events"},
        {"file": "records.ndjson", "topic": "contest.records"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in manifest))
    assert ids(monitor("--input", str(tmp_path), "--json")) == ["a", "b"]
    assert ids(monitor("--input", str(tmp_path), "--topic", "contest.events", "--json")) == ["a"]
    assert ids(monitor("--input", str(tmp_path), "--topic", "contest.records", "--json")) == ["b"]
    on_file = monitor("--input", str(tmp_path / "events.ndjson"), "--topic", "contest.events")
    assert on_file.returncode == 1 and b"--topic applies to an archive directory" in on_file.stderr


def test_archive_directory_without_manifest_reads_sorted_ndjson(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.ndjson.gz").write_bytes(gzip.compress(json.dumps(LINES[0]).encode()))
    (tmp_path / "a.ndjson").write_text(json.dumps(LINES[2]) + "\n")
    (tmp_path / "notes.txt").write_text(json.dumps({**LINES[0], "contestId": "zzz"}))
    assert ids(monitor("--input", str(tmp_path), "--json")) == ["b", "a"]


def test_manifest_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text('{"file": "gone.ndjson"}\n')
    result = monitor("--input", str(tmp_path))
    assert result.returncode == 1
    assert result.stdout == b""
    assert (
        result.stderr.decode().startswith("monitor: ") and "listed file not found" in result.stderr.decode()
    )


def test_hub_and_time_filters(log: Path) -> None:
    assert ids(monitor("-i", str(log), "--json", "--hub", "h2")) == ["b"]
    assert ids(monitor("-i", str(log), "--json", "--hub", "h2", "--hub", "h1")) == ["a", "b"]
    assert ids(monitor("-i", str(log), "--json", "--until", "2025-11-04T08:30:00Z")) == ["a"]
    assert ids(monitor("-i", str(log), "--json", "--since", "1762246800000")) == ["b"]  # 09:00Z


def test_table_format(log: Path) -> None:
    result = monitor("-i", str(log), "--format", "table")
    text = result.stdout.decode("utf-8")
    assert result.returncode == 0
    assert "h1" in text and "h2" in text and "Total" in text and "1200.00 ⚠" in text


@pytest.mark.parametrize(
    ("args", "exit_code"),
    [((), 0), (("--fail-on-breach",), 2), (("--fail-on-breach", "--resolution-threshold", "1200"), 0)],
)
def test_fail_on_breach(log: Path, args: tuple[str, ...], exit_code: int) -> None:
    result = monitor("-i", str(log), *args)
    assert result.returncode == exit_code
    assert result.stdout.decode("utf-8").startswith("Contest Workflow Load Summary\n")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--bogus",), "unknown argument: --bogus"),
        (("--arming-threshold", "0"), "arming threshold must be a positive number"),
        (("--arming-threshold", "-5"), "arming threshold must be a positive number"),
        (("--arming-threshold", "abc"), "arming threshold must be a positive number"),
        (("--resolution-threshold", "nan"), "resolution threshold must be a positive number"),
        (("--resolution-threshold", "inf"), "resolution threshold must be a positive number"),
        (("--arming-threshold",), "expected one argument"),
        (("--format", "xml"), "--format must be one of"),
        (("--json", "--format", "table"), "--json conflicts with --format table"),
        (("--since", "yesterday"), "--since must be an ISO-8601 time"),
        (("--since", "2025-11-05", "--until", "2025-11-04"), "--since must be before --until"),
        (("--input", "/nonexistent/contests.ndjson"), "Input file not found: /nonexistent/contests.ndjson"),
    ],
)
def test_errors_exit_one_with_one_line(args: tuple[str, ...], fragment: str) -> None:
    result = monitor(*args, stdin=NDJSON.encode())
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert result.stdout == b""
    assert stderr.startswith("monitor: ") and stderr.endswith("\n") and stderr.count("\n") == 1
    assert fragment in stderr


def test_corrupt_gzip_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.ndjson.gz"
    path.write_bytes(gzip.compress(NDJSON.encode())[:-12])
    result = monitor("-i", str(path))
    assert result.returncode == 1
    assert result.stderr.decode().startswith("monitor: ") and result.stderr.count(b"\n") == 1


def test_help_exits_zero() -> None:
    result = monitor("--help")
    assert result.returncode == 0
    assert b"--fail-on-breach" in result.stdout


def test_add_parser_wires_into_a_parent_cli(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from sinks.monitor.cli import add_parser, run

    parser = argparse.ArgumentParser(prog="contest-telemetry")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["monitor", "--input", str(log), "--fail-on-breach"])
    assert args.func is run
    assert run(args) == 2
