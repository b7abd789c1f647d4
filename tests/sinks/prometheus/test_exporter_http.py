"""The /metrics server: lifecycle, documented series, promtool lint, scrapes under load."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contest_telemetry.health import Verdict
from sinks.prometheus import (
    ExporterServer,
    ExporterSettings,
    ExporterStartError,
    PipelineCollector,
    PipelineCounters,
    PipelineSnapshot,
    start_exporter,
)
from sinks.prometheus.collector import QUANTILE_FAMILY_TYPE
from sinks.prometheus.server import render_text

ROOT = Path(__file__).resolve().parents[3]
METRICS_DOC = ROOT / "docs" / "metrics.md"


def documented() -> dict[str, tuple[str, set[str]]]:
    """``{name: (type, label names)}`` from the worker's table in docs/metrics.md (the archiver's
    exporter has a table of its own after it)."""
    found: dict[str, tuple[str, set[str]]] = {}
    worker_part = METRICS_DOC.read_text().split("\n## Metrics exported by the archiver")[0]
    for line in worker_part.splitlines():
        m = re.match(r"\|\s*`(contest_[a-z_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if m:
            labels_cell = m.group(3)
            labels = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", labels_cell)))
            if "same" in labels_cell:
                labels = {"hub", "view", "quantile"}
            found[m.group(1)] = (m.group(2), labels)
    assert len(found) >= 20, "metric table of docs/metrics.md not found"
    return found


def fetch(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode("utf-8")


def feed(counters: PipelineCounters, hubs: int = 5, rounds: int = 1) -> None:
    for _ in range(rounds):
        for i in range(hubs):
            hub = f"hub-{i}"
            for type_ in ("armed", "launched", "workflowStarted", "workflowFailed", "resolved", "expired"):
                counters.events(hub, type_, 2)
            counters.late(hub)
            counters.workflow_failures(hub)
            counters.multi_actor(hub)
            counters.capacity_over_two(hub)
            counters.publisher_dropped(hub, 3)
            counters.observe_arming_ms(hub, [300, 7_999, 8_000, 12_000])
            counters.observe_resolution_ms(hub, [40, 800, 900])
        counters.invalid("validation")
        counters.expired_lifecycles()
        counters.processed(hubs * 10)


def full_snapshot(window, hubs: int = 5) -> PipelineSnapshot:
    views = {
        f"hub-{i}": window(
            f"hub-{i}",
            arming=[300, 9_000],
            resolution=[100, 700],
            contests=2,
            participants_sum=5,
            participants_max=3,
        )
        for i in range(hubs)
    }
    views["_all"] = window("_all", arming=[300, 9_000], resolution=[100], contests=10, participants_sum=25)
    return PipelineSnapshot(
        last=views,
        rolling=views,
        watermark_ms=1_700_000_000_000,
        newest_event_time_ms=1_700_000_095_000,
        lag={("contest.events", p): p for p in range(4)},
    )


@pytest.fixture
def server(exporter) -> Iterator[ExporterServer]:
    registry, _, _ = exporter
    srv = start_exporter(registry, ExporterSettings(port=0))
    try:
        yield srv
    finally:
        srv.stop()


def test_port_zero_picks_a_free_port_and_stop_really_stops(exporter):
    registry, _, _ = exporter
    srv = start_exporter(registry, ExporterSettings(host="127.0.0.1", port=0))
    try:
        assert srv.port > 0 and srv.running
        assert srv.url == f"http://127.0.0.1:{srv.port}/metrics"
        status, _, _ = fetch(srv.url)
        assert status == 200
    finally:
        srv.stop()
    assert not srv.running
    assert not srv._thread.is_alive()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", srv.port), timeout=2):
        pass
    srv.stop()  # idempotent


def test_healthz_metrics_and_404(server: ExporterServer):
    for path, check in (("/healthz", "live"), ("/readyz", "ready")):
        status, ctype, body = fetch(f"{server.base_url}{path}")
        assert status == 200 and ctype == "application/json"
        assert json.loads(body) == {"status": "ok", "check": check, "reason": "serving"}
    status, ctype, body = fetch(server.url)
    assert status == 200 and ctype.startswith("text/plain") and "version=0.0.4" in ctype
    assert "contest_processed_events_total 0" in body
    assert fetch(f"{server.base_url}/nope")[0] == 404


class _Flipping:
    """A health source whose answers the test sets (pure logic: the server's side is what is tested)."""

    def __init__(self) -> None:
        self.live = Verdict(True, "fine")
        self.ready = Verdict(False, "waiting for partition assignment", {"partitions": []})

    def liveness(self) -> Verdict:
        return self.live

    def readiness(self) -> Verdict:
        return self.ready


def test_healthz_and_readyz_answer_the_health_source(exporter):
    registry, _, _ = exporter
    health = _Flipping()
    srv = start_exporter(registry, ExporterSettings(port=0), health)
    try:
        status, _, body = fetch(f"{srv.base_url}/readyz")
        assert status == 503
        assert json.loads(body) == {
            "status": "fail",
            "check": "ready",
            "reason": "waiting for partition assignment",
            "partitions": [],
        }
        assert fetch(f"{srv.base_url}/healthz")[0] == 200
        health.live = Verdict(False, "agent crash loop", {"crashes": 3})
        status, _, body = fetch(f"{srv.base_url}/healthz")
        assert status == 503 and json.loads(body)["crashes"] == 3
    finally:
        srv.stop()


def test_port_in_use_raises_exporter_start_error(exporter):
    registry, _, _ = exporter
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ExporterStartError, match=str(port)):
            start_exporter(registry, ExporterSettings(port=port))


def test_scrape_returns_the_documented_series(server: ExporterServer, exporter, window):
    _, counters, source = exporter
    feed(counters)
    source.snap = full_snapshot(window)
    _, _, body = fetch(server.url)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name, (doc_type, doc_labels) in documented().items():
        family_name = name.removesuffix("_total") if doc_type == "counter" else name
        assert family_name in families, f"{name} missing from the scrape"
        family = families[family_name]
        expected_type = QUANTILE_FAMILY_TYPE if name.endswith("_quantile_seconds") else doc_type
        assert family.type == expected_type, name
        assert family.samples, f"{name} has no samples"
        for s in family.samples:
            labels = set(s.labels) - ({"le"} if doc_type == "histogram" else set())
            assert labels == doc_labels, (name, s)
    assert 'contest_arming_latency_seconds_bucket{hub="hub-0",le="8.0"} 3' in body
    assert 'contest_resolution_latency_seconds_bucket{hub="hub-0",le="0.8"} 2' in body
    quantiles = {s.labels["quantile"] for s in families["contest_arming_latency_quantile_seconds"].samples}
    assert quantiles == {"0.5", "0.95", "0.99"}
    views = {s.labels["view"] for s in families["contest_arming_latency_quantile_seconds"].samples}
    assert views == {"last", "rolling"}
    # no contest/user id ever makes it into a label
    assert "contest-" not in body and "user" not in body.replace("# HELP", "")


def test_promtool_check_metrics_finds_no_problems(server: ExporterServer, exporter, window, promtool: str):
    _, counters, source = exporter
    feed(counters, hubs=20)
    counters.events('odd "hub"\\name\n', "armed")
    counters.observe_arming_ms("x" * 10_000, [100])
    source.snap = full_snapshot(window, hubs=20)
    _, _, body = fetch(server.url)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).strip() == ""


def test_render_text_matches_prometheus_client(exporter, window):
    registry, counters, source = exporter
    feed(counters, hubs=7)
    counters.events('odd "hub"\\name\n', "armed")
    source.snap = full_snapshot(window, hubs=7)

    def samples(text: str) -> dict[str, list[tuple[str, tuple[tuple[str, str], ...], float]]]:
        out = {}
        for f in text_string_to_metric_families(text):
            out[f"{f.name}:{f.type}"] = sorted(
                (s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples
            )
        return out

    ours = samples(render_text(registry).decode())
    theirs = samples(generate_latest(registry).decode())
    assert ours == theirs


def test_scrapes_under_load(server: ExporterServer, exporter, window):
    """A worker thread pushes batches while the test scrapes: every scrape parses, counters only grow."""
    _, counters, source = exporter
    source.snap = full_snapshot(window, hubs=50)
    stop = threading.Event()

    def worker() -> None:
        i = 0
        while not stop.is_set():  # batches, as the stream worker calls the sink
            for _ in range(200):
                counters.events(f"hub-{i % 600}", "armed", 5)
                counters.observe_arming_ms(f"hub-{i % 600}", [100.0, 9_000.0])
                counters.processed(5)
                i += 1
            time.sleep(0.001)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        previous = -1.0
        for _ in range(8):
            status, _, body = fetch(server.url)
            assert status == 200
            families = {f.name: f for f in text_string_to_metric_families(body)}
            processed = families["contest_processed_events"].samples[0].value
            assert processed >= previous
            previous = processed
            hubs = {s.labels["hub"] for s in families["contest_events"].samples}
            assert len(hubs - {"_other", "_all"}) <= 500
    finally:
        stop.set()
        thread.join(5)
    assert previous > 0


def test_registry_is_never_the_global_one(exporter):
    from prometheus_client import REGISTRY

    registry, _, _ = exporter
    assert registry is not REGISTRY
    assert REGISTRY.get_sample_value("contest_processed_events_total") is None


def test_counters_only_collector_serves_a_valid_page(promtool: str):
    registry = CollectorRegistry()
    registry.register(PipelineCollector(PipelineCounters()))
    with start_exporter(registry, ExporterSettings(port=0)) as srv:
        _, _, body = fetch(srv.url)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout
