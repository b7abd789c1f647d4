"""A real Prometheus scrapes the exporter with the project's rule files (deploy/prometheus/rules/).

The fake SnapshotSource reports a rolling arming p95 of 12 s on one hub (budget 8 s) and a worker
thread keeps observing 9 s arming latencies, so:

- ``ContestArmingP95OverBudget`` (``for: 5m`` in the shipped file) must reach ``pending`` with the
  shipped rule file, unchanged: waiting 5 minutes for ``firing`` is not an option in a test;
- a copy of that one alert with ``for:`` rewritten to ``0s`` (and a ``copy`` label to tell it
  apart) must reach ``firing``: same expression, so the series the exporter serves make it fire;
- the recording rules must see the 8 s budget bucket (``le="8.0"``): the arming SLO error ratio
  is ~1 and the fast burn-rate alert is at least pending.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sinks.prometheus import ExporterServer, ExporterSettings, PipelineSnapshot, start_exporter
from tests.helpers.prometheus_server import PrometheusServer, find_prometheus

ROOT = Path(__file__).resolve().parents[3]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
ALERT = "ContestArmingP95OverBudget"


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    binary = find_prometheus()
    if binary is None:
        message = "the prometheus server binary is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def zero_for_copy(tmp_path: Path) -> Path:
    """The shipped ContestArmingP95OverBudget rule alone, ``for: 0s``, labelled ``copy="for0s"``."""
    shipped = yaml.safe_load((RULES_DIR / "contest-alerts.rules.yml").read_text())
    rule = next(r for g in shipped["groups"] for r in g["rules"] if r.get("alert") == ALERT)
    assert rule["for"] == "5m", "the shipped rule changed; revisit this test"
    rule = {**rule, "for": "0s", "labels": {**rule.get("labels", {}), "copy": "for0s"}}
    path = tmp_path / "arming-p95-for0s.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "test-copy", "rules": [rule]}]}, sort_keys=False))
    return path


@pytest.fixture
def loaded_exporter(exporter, window) -> Iterator[ExporterServer]:
    registry, counters, source = exporter
    slow = window(
        "hub-slow",
        arming=[2_000] * 10 + [12_000] * 2,  # p95 12 s > 8 s
        resolution=[100, 200, 300],
        contests=12,
        participants_sum=30,
        participants_max=4,
    )
    fast = window("hub-fast", arming=[1_000, 2_000], resolution=[100], contests=2, participants_sum=4)
    source.snap = PipelineSnapshot(
        last={"hub-slow": slow, "hub-fast": fast},
        rolling={"hub-slow": slow, "hub-fast": fast, "_all": slow},
        watermark_ms=1_700_000_000_000,
        newest_event_time_ms=1_700_000_099_000,
        lag={("contest.events", 0): 3},
    )
    stop = threading.Event()

    def worker() -> None:
        while not stop.wait(0.05):
            counters.events("hub-slow", "launched", 2)
            counters.observe_arming_ms("hub-slow", [9_000, 9_500])
            counters.observe_resolution_ms("hub-slow", [100, 100])
            counters.processed(2)

    thread = threading.Thread(target=worker, daemon=True)
    srv = start_exporter(registry, ExporterSettings(port=0))
    thread.start()
    try:
        yield srv
    finally:
        stop.set()
        thread.join(5)
        srv.stop()


def _alerts(prom: PrometheusServer, state: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in prom.alerts()
        if a["state"] == state and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def _value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if result else None


def test_real_prometheus_evaluates_the_shipped_rules(
    prometheus_binary: str, loaded_exporter: ExporterServer, tmp_path: Path
):
    target = f"127.0.0.1:{loaded_exporter.port}"
    rule_files = [RULES_DIR / "contest-recording.rules.yml", RULES_DIR / "contest-alerts.rules.yml"]
    with PrometheusServer([target], rule_files=[*rule_files, zero_for_copy(tmp_path)]) as prom:
        prom.wait_for(lambda: prom.query('up{job="contest-telemetry"} == 1'), timeout=60, message="target up")

        # the series look as documented
        p95 = prom.wait_for(
            lambda: prom.query(
                'contest_arming_latency_quantile_seconds{hub="hub-slow",view="rolling",quantile="0.95"}'
            ),
            timeout=30,
            message="arming p95 gauge",
        )
        assert _value(p95) == 12.0
        assert _value(prom.query('contest_budget_breached{hub="hub-slow",stage="arming"}')) == 1
        assert _value(prom.query('contest_budget_breached{hub="hub-fast",stage="arming"}')) == 0
        assert _value(prom.query('contest_budget_seconds{stage="resolution"}')) == 0.8
        assert _value(prom.query('contest_consumer_lag_records{topic="contest.events",partition="0"}')) == 3
        assert prom.query('contest_arming_latency_seconds_bucket{hub="hub-slow",le="8.0"}')
        assert not prom.query('{__name__=~"contest_.*",hub="hub-slow",contest_id!=""}')

        # the copy with for: 0s fires; the shipped rule (for: 5m) is pending for the slow hub only
        firing = prom.wait_for(
            lambda: _alerts(prom, "firing", alertname=ALERT, copy="for0s"), timeout=60, message="copy firing"
        )
        assert {a["labels"]["hub"] for a in firing} == {"hub-slow", "_all"}
        pending = prom.wait_for(
            lambda: [a for a in _alerts(prom, "pending", alertname=ALERT) if "copy" not in a["labels"]],
            timeout=30,
            message="shipped rule pending",
        )
        assert {a["labels"]["hub"] for a in pending} == {"hub-slow", "_all"}
        assert pending[0]["labels"]["severity"] == "ticket"

        # burn-rate path: histograms with le="8.0" feed the recording rules
        ratio = prom.wait_for(
            lambda: _value(prom.query("contest:arming_slo_errors:ratio_rate5m")),
            timeout=60,
            message="SLO ratio",
        )
        assert ratio == pytest.approx(1.0)
        prom.wait_for(
            lambda: _alerts(prom, "pending", alertname="ContestArmingErrorBudgetBurnFast"),
            timeout=30,
            message="fast burn pending",
        )
        targets = prom.targets_health()
        assert all(t["health"] == "up" for t in targets), targets
