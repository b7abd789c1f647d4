"""The archiver's exporter against a real broker: /readyz once the manifest is recovered and the
partitions assigned, /metrics with lag per partition, records, lines, bytes, chunks, gaps and the
time since the last commit; a port in use stops ``archive run`` with one line."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contest_telemetry.schema import encode_envelope
from contest_telemetry.settings import KafkaSettings
from tests.helpers.archive_data import event, record_value
from tests.helpers.archive_proc import REPO
from tests.helpers.streams_worker import produce

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, page = get(f"{base}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


class Archiver:
    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "contest_telemetry", "archive", "run", *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def until(self, check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            assert self.proc.poll() is None, f"archiver exited while waiting for {what}:\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r}):\n{self.text()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def archivers() -> Iterator[Callable[..., Archiver]]:
    started: list[Archiver] = []

    def start(args: list[str], log: Path, **env: str) -> Archiver:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("CT_ARCHIVE_", "CT_TOPIC_"))}
        archiver = Archiver(args, log, {**clean, "CT_ARCHIVER_EXPORTER_PORT": "0", **env})
        started.append(archiver)
        return archiver

    try:
        yield start
    finally:
        for archiver in started:
            archiver.stop()


def test_metrics_and_health_of_a_running_archiver(
    archivers: Callable[..., Archiver],
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    unique: str,
    tmp_path: Path,
) -> None:
    events_topic = make_topic("events", partitions=2)
    records_topic = make_topic("records", partitions=1)
    bootstrap = kafka_settings.bootstrap_servers
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    # Both forms: 12 records of one event each, and 3 envelopes of 4 events.
    singles = [
        (f"hub-{n % 3}".encode(), orjson.dumps(event(n, f"hub-{n % 3}", timestamp=now))) for n in range(12)
    ]
    batches = [
        (
            b"hub-9",
            encode_envelope("hub-9", [event(100 + 4 * b + i, "hub-9", timestamp=now) for i in range(4)]),
        )
        for b in range(3)
    ]
    asyncio.run(produce(bootstrap, events_topic, singles + batches))
    asyncio.run(
        produce(bootstrap, records_topic, [(b"hub-1", orjson.dumps(record_value(n))) for n in range(7)])
    )

    archive = tmp_path / "archive"
    archiver = archivers(
        [
            "--bootstrap", bootstrap, "--events-topic", events_topic,
            "--records-topic", records_topic, "--chunk-records", "5", "--group", f"ct-arch-{unique}",
        ],
        tmp_path / "archiver.log",
        CT_ARCHIVE_DIR=str(archive),
        CT_LOG_FORMAT="json",
    )  # fmt: skip
    found = archiver.until(lambda: re.search(r"metrics at (http://\S+)/metrics", archiver.text()), "the URL")
    base = found.group(1)
    status, body = archiver.until(lambda: (r := get(f"{base}/readyz"))[0] == 200 and r, "ready")
    assert json.loads(body) == {
        "status": "ok",
        "check": "ready",
        "reason": "partitions assigned, manifest recovered",
        "partitions": 3,
    }

    def caught_up() -> dict[Any, float] | None:
        got = samples(base)
        lags = {k: v for k, v in got.items() if k[0] == "contest_archiver_lag_records"}
        done = got.get(("contest_archiver_records_total", (("topic", events_topic),))) == 15
        return got if done and len(lags) == 3 and not any(lags.values()) else None

    got = archiver.until(caught_up, "every record read and no lag")
    assert got[("contest_archiver_records_total", (("topic", records_topic),))] == 7
    assert got[("contest_archiver_lines_total", (("topic", events_topic),))] == 24
    assert got[("contest_archiver_lines_total", (("topic", records_topic),))] == 7
    # Chunks of 5 records close as soon as they are full: events p0/p1 and records hold 22 records.
    full_chunks = got[("contest_archiver_chunks_total", ())]
    assert full_chunks >= 2 and got[("contest_archiver_bytes_total", ())] > 0
    assert got[("contest_archiver_gaps_total", ())] == 0
    assert got[("contest_archiver_missing_offsets_total", ())] == 0
    assert got[("contest_archiver_seconds_since_last_commit", ())] >= 0
    status, body = get(f"{base}/healthz")
    assert status == 200 and json.loads(body) == {
        "status": "ok",
        "check": "live",
        "reason": "archiving",
        "lagRecords": 0,
    }

    assert archiver.stop() == 0
    manifest = [json.loads(line) for line in (archive / "manifest.jsonl").read_text().splitlines()]
    assert sum(entry["records"] for entry in manifest) == 22
    assert len(manifest) >= full_chunks
    # Every line on stderr is JSON (CT_LOG_FORMAT=json): aiokafka's records, the progress lines.
    logged = [json.loads(line) for line in archiver.text().splitlines()]
    assert all(list(doc)[:4] == ["time", "level", "logger", "message"] for doc in logged)
    assert any(doc["message"].startswith("archive: 22 records") for doc in logged)


def test_an_exporter_port_in_use_stops_archive_run_with_one_line(
    archivers: Callable[..., Archiver],
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    tmp_path: Path,
) -> None:
    events_topic = make_topic("events", partitions=1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        archiver = archivers(
            [
                "--bootstrap", kafka_settings.bootstrap_servers,
                "--events-topic", events_topic, "--records-topic", "",
            ],
            tmp_path / "archiver.log",
            CT_ARCHIVE_DIR=str(tmp_path / "archive"),
            CT_ARCHIVER_EXPORTER_PORT=str(port),
        )  # fmt: skip
        archiver.proc.wait(60)
    lines = archiver.text().strip().splitlines()
    assert archiver.proc.returncode == 1
    assert len(lines) == 1, lines
    assert lines[0] == f"archive: exporter: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "archive" / "manifest.jsonl").exists()
