"""/healthz and /readyz of a real worker against a real broker: not ready while it starts, ready once
partitions are assigned and its table recovered, unhealthy while its agent crash-loops (injected
with CT_WORKER_FAULT_AGENT_CRASHES), healthy again afterwards with every record applied. The worker
logs JSON (CT_LOG_FORMAT=json): faust's records and the worker's own go through one formatter."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from contest_telemetry.settings import KafkaSettings, TopicSettings
from tests.helpers.streams_reference import make_events
from tests.helpers.streams_worker import WorkerProcess, collect, produce
from tests.streams.engine_harness import envelopes

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

CRASHES = 4


def probe(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(url: str, status: int, worker: WorkerProcess, timeout: float = 90.0) -> dict[str, Any]:
    """Poll ``url`` until it answers ``status``; returns that answer's body."""
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        last = probe(url)
        if last[0] == status:
            return last[1]
        assert worker.alive(), f"worker died while waiting for {status} from {url}:\n{worker.log()}"
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout}s (last: {last}):\n{worker.log()}")


def metrics_base(worker: WorkerProcess, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"metrics at (http://\S+)/metrics", worker.log())
        if found:
            return found.group(1)
        assert worker.alive(), worker.log()
        time.sleep(0.1)
    raise AssertionError(f"the worker printed no metrics URL:\n{worker.log()}")


@pytest.fixture
def worker(
    tmp_path: Path, kafka_settings: KafkaSettings, topic_settings: TopicSettings, unique: str
) -> Iterator[WorkerProcess]:
    w = WorkerProcess(
        kafka_settings.bootstrap_servers,
        topic_settings,
        f"ct-health-{unique}",
        tmp_path / "data",
        tmp_path / "worker.log",
        source="events",
        fault_agent_crashes=CRASHES,
        crash_loop_restarts=3,
        crash_loop_window_s=20,  # faust restarts a crashed agent about every 5 s
    )
    w.env["CT_LOG_FORMAT"] = "json"
    try:
        yield w.start()
    finally:
        w.stop()


def test_ready_after_recovery_unhealthy_in_a_crash_loop_healthy_again(
    worker: WorkerProcess, kafka_settings: KafkaSettings, topic_settings: TopicSettings
) -> None:
    base = metrics_base(worker)
    first_ready = probe(f"{base}/readyz")
    assert first_ready[0] == 503, first_ready  # the exporter answers before faust joined the group
    assert first_ready[1]["status"] == "fail" and first_ready[1]["reason"]
    body = wait_for(f"{base}/readyz", 200, worker)
    assert body == {
        "status": "ok",
        "check": "ready",
        "reason": "partitions assigned, tables recovered",
        "partitions": list(range(topic_settings.partitions)),
    }
    assert probe(f"{base}/healthz") == (
        200,
        {"status": "ok", "check": "live", "reason": "processing", "agentCrashes": 0},
    )

    # Both input forms, recent event times: half the events one per record, half in envelopes.
    now = int(time.time() * 1000)
    events = make_events(
        hubs=3, contests_per_hub=10, start_ms=now - 120_000, span_ms=60_000, send_durations=0.5
    )
    half = len(events) // 2
    records = [(e["hubId"].encode(), orjson.dumps(e)) for e in events[:half]]
    records += [(hub.encode(), value) for hub, value in envelopes(events[half:], per=5)]
    asyncio.run(produce(kafka_settings.bootstrap_servers, topic_settings.events, records))

    body = wait_for(f"{base}/healthz", 503, worker)
    assert body["status"] == "fail" and body["check"] == "live"
    assert "restarting in a loop" in body["reason"] and "InjectedAgentCrash" in body["reason"], body
    assert body["agentCrashes"] >= 3
    assert probe(f"{base}/readyz")[0] == 503  # not live, so not ready either

    body = wait_for(f"{base}/healthz", 200, worker)
    assert body["reason"] == "processing" and body["agentCrashes"] == CRASHES
    assert probe(f"{base}/readyz")[0] == 200

    # Nothing was lost to the crashes: every contest reaches contest.records.
    contests = {e["contestId"] for e in events if e.get("contestId")}
    seen: set[str] = set()

    def done(values: list[dict[str, Any]]) -> bool:
        seen.update(v["contestId"] for v in values if v.get("contestId"))
        return contests <= seen

    asyncio.run(collect(kafka_settings.bootstrap_servers, topic_settings.records, done, alive=worker.alive))
    assert probe(f"{base}/healthz")[0] == 200

    # One formatter for every record: faust's crash report and the worker's own re-read warning.
    lines = [line for line in worker.log_path.read_text().splitlines() if line.strip()]
    docs = [json.loads(line) for line in lines]  # every line is JSON
    assert all(list(d)[:4] == ["time", "level", "logger", "message"] for d in docs)
    assert any(
        d["logger"].startswith("faust") and "InjectedAgentCrash" in d.get("exception", "") for d in docs
    )
    crashed = [d for d in docs if "the agent crashed on this record" in d["message"]]
    assert len(crashed) == CRASHES, crashed
    assert all(d["topic"] == topic_settings.events and d["level"] == "ERROR" for d in crashed)
    assert all(isinstance(d["partition"], int) and isinstance(d["offset"], int) for d in crashed)
