"""The README's first command, end to end: a short demo run on the embedded default and on the
session broker (Apache Kafka in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import KafkaTarget

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("where", ["embedded", "session-broker"])
def test_demo_runs_to_a_summary_and_a_clean_archive(
    where: str, tmp_path: Path, kafka_broker: KafkaTarget
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    if where == "session-broker":
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_broker.bootstrap
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "contest_telemetry",
            "demo",
            "--duration",
            "6",
            "--rate",
            "300",
            "--hubs",
            "6",
            "--breach",
            "--archive-dir",
            str(tmp_path / "archive"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["published"] > 1000
    assert summary["processed"] == summary["published"]
    assert summary["publisher"]["failed"] == 0 and summary["publisher"]["dropped"] == 0
    assert summary["archive_ok"] is True and summary["archive_problems"] == 0
    assert summary["monitor_exit"] == 0 and summary["worker_exit"] == 0
    assert len(summary["breaching_hubs"]) == 2  # 30% of 6 hubs
    text = result.stdout
    for expected in (
        "Contest Workflow Load Summary",
        "archive verify",
        "OK:",
        "where things are",
        "arming p95",
        "/metrics",
    ):
        assert expected in text
    archive = Path(summary["archive_dir"])
    verify = subprocess.run(
        [sys.executable, "-m", "contest_telemetry", "archive", "verify", str(archive), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"] is True
    # The archive holds every published event exactly once.
    entries = [json.loads(line) for line in (archive / "manifest.jsonl").read_text().splitlines()]
    events_topic = next(e["topic"] for e in entries if e["topic"].startswith("contest.events"))
    assert sum(e["lines"] for e in entries if e["topic"] == events_topic) == summary["published"]
    monitor = subprocess.run(
        [
            sys.executable,
            "-m",
            "contest_telemetry",
            "monitor",
            "--input",
            str(archive),
            "--json",
            "--topic",
            next(
                p.name
                for p in archive.iterdir()
                if p.name.startswith("contest.events") and ".dlq" not in p.name
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert monitor.returncode == 0, monitor.stderr
    report = json.loads(monitor.stdout)
    assert report["durations"]["arming"]["breached"] is True  # --breach blows the budget
    assert report["totals"]["contestsObserved"] > 100


def test_demo_archives_to_object_storage(kafka_broker: KafkaTarget, s3_archive: str) -> None:
    """``--archive-dir s3://bucket/prefix``: the same run, its archive on the S3 server."""
    from sinks.archive.reader import open_reader

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "contest_telemetry",
            "demo",
            "--duration",
            "4",
            "--rate",
            "200",
            "--hubs",
            "4",
            "--archive-dir",
            s3_archive,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    url = summary["archive_dir"]
    assert url.startswith(f"{s3_archive}/run-")
    assert summary["archive_ok"] is True and summary["monitor_exit"] == 0
    verify = subprocess.run(
        [sys.executable, "-m", "contest_telemetry", "archive", "verify", url, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0 and json.loads(verify.stdout)["root"] == url
    chunks = open_reader(url).chunks()
    events_topic = next(e.topic for e in chunks if e.topic.startswith("contest.events"))
    assert sum(e.lines for e in chunks if e.topic == events_topic) == summary["published"]
