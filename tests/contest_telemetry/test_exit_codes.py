"""The one table of exit codes (README.md "Exit codes", the docstring of contest_telemetry/cli/main.py)
is what the commands do, and a bug is never disguised as a user error."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import contest_telemetry.cli.main as dispatcher
from contest_telemetry.cli.errors import (
    EXIT_BREACHED,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    error_line,
    run_reported,
)
from contest_telemetry.cli.main import main as ct_main
from contest_telemetry.settings import KafkaSettings
from sinks.monitor.cli import main as monitor_main

ROOT = Path(__file__).resolve().parents[2]
CODES = {EXIT_OK, EXIT_ERROR, EXIT_BREACHED, EXIT_NOT_RUNNING, EXIT_INTERRUPTED}

Main = Callable[[list[str]], int]
# The monitor through the dispatcher and on its own (python -m sinks.monitor): the same codes.
MONITORS: dict[str, Main] = {
    "contest-telemetry monitor": lambda argv: ct_main(["monitor", *argv]),
    "python -m sinks.monitor": monitor_main,
}


def _table_codes(text: str, row: str) -> set[int]:
    return {int(code) for code in re.findall(row, text, flags=re.MULTILINE)}


def test_the_readme_and_the_dispatcher_document_the_same_codes() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Exit codes\n", 1)[1].split("\n## ", 1)[0]
    assert _table_codes(section, r"^\| (\d+) \|") == CODES
    assert _table_codes(dispatcher.__doc__ or "", r"^(\d+) {2,}\S") == CODES


def _contest_lines(resolution_ms: int) -> str:
    now = int(time.time() * 1000)
    events = [
        {"message": "telemetry.contest.launched", "contestId": "c1", "hubId": "h", "roomId": "r",
         "participantCount": 2, "armingDurationMs": 240, "timestamp": "2026-12-02T12:00:00Z"},
        {"message": "telemetry.contest.resolved", "contestId": "c1", "hubId": "h", "roomId": "r",
         "participantCount": 2, "armingDurationMs": 240, "resolutionDurationMs": resolution_ms,
         "outcomeTier": "win", "resolvedAt": now},
    ]  # fmt: skip
    return "".join(json.dumps(event) + "\n" for event in events)


@pytest.mark.parametrize("entry", list(MONITORS))
def test_monitor_codes(entry: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = MONITORS[entry]
    within, breached = tmp_path / "within.ndjson", tmp_path / "breached.ndjson"
    within.write_text(_contest_lines(500))
    breached.write_text(_contest_lines(900))  # resolution p95 900 ms > the 800 ms budget

    assert run(["--input", str(within), "--fail-on-breach"]) == EXIT_OK
    assert run(["--input", str(breached)]) == EXIT_OK  # the existing tool: a breach is not an error
    assert run(["--input", str(breached), "--fail-on-breach"]) == EXIT_BREACHED
    assert "Resolution duration p95: 900.00 ms (budget 800 ms) ⚠" in capsys.readouterr().out

    for argv, line in (
        (["--bogus"], "monitor: unknown argument: --bogus"),
        (["--arming-threshold", "0"], "monitor: arming threshold must be a positive number (got '0')"),
        (["--input", str(tmp_path / "nope")], "monitor: Input file not found: "),
    ):
        assert run(argv) == EXIT_ERROR, argv
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith(line), err


@pytest.mark.parametrize(
    "argv,env,line",
    [
        (["nosuch"], {}, "contest-telemetry: argument command: invalid choice: 'nosuch'"),
        (["loadgen", "--hubs", "0"], {}, "loadgen: argument --hubs: expected a positive integer, got '0'"),
        (
            ["archive", "run", "--chunk-records", "0"],
            {},
            "archive: invalid setting CT_ARCHIVE_CHUNK_RECORDS='0'",
        ),
        (["archive", "verify"], {}, "archive: the following arguments are required: DIR|URL"),
        (["dlq", "inspect", "--since", "soon"], {}, "dlq: --since: not an ISO-8601 time: 'soon'"),
        (["worker"], {"CT_WORKER_WINDOW_S": "-5"}, "worker: invalid setting CT_WORKER_WINDOW_S='-5'"),
        (
            ["ingest"],
            {"KAFKA_BOOTSTRAP_SERVERS": "host:abc"},
            "ingest: invalid setting KAFKA_BOOTSTRAP_SERVERS=",
        ),
        (["broker", "start", "--port", "70000"], {}, "broker: --port must be between 1 and 65535, got 70000"),
    ],
)
def test_a_bad_flag_or_setting_exits_1_with_one_line_naming_it(
    argv: list[str],
    env: dict[str, str],
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CT_BROKER_STATE", str(tmp_path / "broker.json"))  # not a broker others started
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert ct_main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(line), err


def test_no_broker_answering_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_CONNECT_TIMEOUT_S", "1")
    assert ct_main(["dlq", "inspect", "--bootstrap", "127.0.0.1:1"]) == EXIT_ERROR
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("dlq: no Kafka broker answered at"), err


def test_broker_status_without_a_broker_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CT_BROKER_STATE", str(tmp_path / "broker.json"))
    assert ct_main(["broker", "status"]) == EXIT_NOT_RUNNING
    assert capsys.readouterr().out == "no broker running\n"


def test_interrupted_exits_130(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> int:
        raise KeyboardInterrupt

    assert run_reported("monitor", interrupted) == EXIT_INTERRUPTED
    assert capsys.readouterr().err == ""


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert ct_main(["monitor", "--help"]) == EXIT_OK
    assert "--fail-on-breach" in capsys.readouterr().out


class _Internal(BaseModel):
    size: int


def test_only_the_projects_errors_and_settings_become_one_line() -> None:
    with pytest.raises(ValidationError) as setting:
        KafkaSettings(bootstrap_servers="host:abc")
    assert (error_line(setting.value) or "").startswith("invalid setting KAFKA_BOOTSTRAP_SERVERS='host:abc'")
    with pytest.raises(ValidationError) as internal:
        _Internal(size="x")  # type: ignore[arg-type]
    assert error_line(internal.value) is None  # a model of the code, not a setting: a bug
    assert error_line(ValueError("invalid literal for int()")) is None
    assert error_line(KeyError("hubId")) is None


def test_a_bug_is_not_disguised_as_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ValueError from the code (not from a flag: those are ConfigError) propagates with its
    traceback; main.py used to print any ValueError as one line, as if the user had erred."""
    import producers.cli

    def buggy(args: object) -> int:
        return int("not a number")

    monkeypatch.setattr(producers.cli, "run", buggy)
    with pytest.raises(ValueError, match="invalid literal for int"):
        ct_main(["loadgen", "--events", "1"])


def test_a_bug_exits_1_with_its_traceback(tmp_path: Path) -> None:
    script = (
        "import sys, producers.cli\n"
        "from contest_telemetry.cli.main import main\n"
        "producers.cli.run = lambda args: {}['hubId']\n"
        "sys.exit(main(['loadgen', '--events', '1']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == EXIT_ERROR
    assert "Traceback (most recent call last)" in done.stderr and "KeyError: 'hubId'" in done.stderr
