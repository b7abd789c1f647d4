"""A bad setting or an unreachable broker stops a command with one line on stderr (naming the
variable, or the brokers and why) and a non-zero exit: never a traceback, never a late failure."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

COMMANDS = {
    "worker": ["worker"],
    "ingest": ["ingest"],
    "loadgen": ["loadgen", "--events", "1"],
    "archive run": ["archive", "run"],
}


def _run(command: str, env: dict[str, str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    args = list(COMMANDS[command])
    if command == "archive run":
        args += ["--dir", str(tmp_path / "archive")]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CT_"))}
    clean["CT_WORKER_DATA_DIR"] = str(tmp_path / "worker")
    # The exporters bind before anything connects: free ports, so a process on the defaults never matters.
    clean["CT_EXPORTER_PORT"] = clean["CT_ARCHIVER_EXPORTER_PORT"] = "0"
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "contest_telemetry", *args],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=120,
        check=False,
    )
    return done, time.monotonic() - began


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize(
    "command,env,expect",
    [
        ("worker", {"CT_WORKER_WINDOW_S": "0.0001"}, "CT_WORKER_WINDOW_S='0.0001': must be at least 0.001 s"),
        (
            "worker",
            {"CT_WORKER_LIFECYCLE_TTL_S": "inf"},
            "CT_WORKER_LIFECYCLE_TTL_S='inf': Input should be a finite",
        ),
        ("worker", {"CT_EXPORTER_PORT": "abc"}, "CT_EXPORTER_PORT='abc': Input should be a valid integer"),
        (
            "worker",
            {"CT_INGEST_MAX_POLL_RECORDS": "0"},
            "CT_INGEST_MAX_POLL_RECORDS='0'",
        ),  # read by its child
        (
            "ingest",
            {"CT_EVENT_TIME_MAX_FUTURE_S": "inf"},
            "CT_EVENT_TIME_MAX_FUTURE_S='inf'",
        ),  # read once connected
        ("loadgen", {"CT_PUBLISHER_MAX_RECORD_BYTES": "12"}, "CT_PUBLISHER_MAX_RECORD_BYTES='12'"),
        ("ingest", {"KAFKA_BOOTSTRAP_SERVERS": "host:abc"}, "KAFKA_BOOTSTRAP_SERVERS='host:abc'"),
        *(
            (
                command,
                {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nope"},
                "KAFKA_SSL_CAFILE='/nope': no such file",
            )
            for command in COMMANDS
        ),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    command: str, env: dict[str, str], expect: str, tmp_path: Path
) -> None:
    done, _ = _run(command, {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", **env}, tmp_path)
    line = _one_line(done)
    assert "invalid setting " in line and expect in line, line
    assert done.returncode == 1  # the one table of exit codes (README.md, "Exit codes")
    assert not (tmp_path / "archive").exists()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unreachable_broker_is_one_line_after_a_bounded_retry(command: str, tmp_path: Path) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "KAFKA_CONNECT_TIMEOUT_S": "2"}
    done, took = _run(command, env, tmp_path)
    line = _one_line(done)
    assert "no Kafka broker answered at KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1 (PLAINTEXT) in 2 s" in line, line
    assert "attempts; last error: " in line and "127.0.0.1" in line.rsplit("last error: ", 1)[1], line
    assert 2.0 <= took < 60, took  # it retried for KAFKA_CONNECT_TIMEOUT_S, then stopped
    assert done.returncode == 1


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unknown_log_format_is_refused_at_start(command: str, tmp_path: Path) -> None:
    done, _ = _run(command, {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "CT_LOG_FORMAT": "xml"}, tmp_path)
    line = _one_line(done)
    assert "CT_LOG_FORMAT='xml': Input should be 'text' or 'json'" in line, line
    assert not (tmp_path / "archive").exists()


def test_a_health_port_in_use_is_one_line_before_anything_connects(tmp_path: Path) -> None:
    """The worker binds its exporter (/metrics, /healthz, /readyz) before it connects: no broker here."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "CT_EXPORTER_PORT": str(port)}
        done, _ = _run("worker", env, tmp_path)
    line = _one_line(done)
    assert line.startswith("worker: exporter: cannot listen on 127.0.0.1:"), line
    assert f":{port}: Address already in use" in line, line
    assert done.returncode == 1
