"""End to end for SREs: load generator -> real broker -> worker (subprocess) -> its exporter ->
a real Prometheus server with the shipped rules -> the p95 alert fires.

The shipped ``ContestArmingP95OverBudget`` has ``for: 5m``; a test cannot wait that long, so
Prometheus gets the shipped recording rules plus a copy of that one alert with ``for: 0s``
(labelled ``copy="for0s"``), and the shipped alert itself must at least be pending.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from contest_telemetry.broker import free_port
from contest_telemetry.broker.process import stop_process_group
from contest_telemetry.settings import TopicSettings
from tests.conftest import KafkaTarget
from tests.helpers.prometheus_server import PrometheusServer, find_prometheus

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules"
ALERT = "ContestArmingP95OverBudget"


def _require(binary: str | None, what: str) -> str:
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is not installed (scripts/install-system-deps.sh installs it)")
        pytest.skip(f"{what} is not installed")
    return binary


def _for0s_copy(tmp_path: Path) -> Path:
    shipped = yaml.safe_load((RULES / "contest-alerts.rules.yml").read_text())
    rule = next(r for g in shipped["groups"] for r in g["rules"] if r.get("alert") == ALERT)
    rule = {**rule, "for": "0s", "labels": {**rule.get("labels", {}), "copy": "for0s"}}
    path = tmp_path / "for0s.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "e2e-copy", "rules": [rule]}]}))
    return path


@pytest.fixture
def worker(
    kafka_broker: KafkaTarget, topic_settings: TopicSettings, unique: str, tmp_path: Path
) -> Iterator[str]:
    """A real worker subprocess with 2 s windows; yields its exporter's host:port."""
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
        **topic_settings.as_env(),
        "CT_WORKER_APP_ID": f"e2e-{unique}",
        "CT_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "CT_WORKER_WINDOW_S": "2",
        "CT_WORKER_GRACE_S": "1",
        "CT_EXPORTER_PORT": str(port),
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "contest_telemetry", "worker"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(proc, 30)
        log.close()


def test_breaching_load_fires_the_p95_alert_through_a_real_prometheus(
    worker: str, kafka_broker: KafkaTarget, topic_settings: TopicSettings, tmp_path: Path
) -> None:
    prometheus = _require(find_prometheus(), "prometheus")
    promtool = _require(shutil.which("promtool"), "promtool")
    rules = [RULES / "contest-recording.rules.yml", RULES / "contest-alerts.rules.yml", _for0s_copy(tmp_path)]
    loadgen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "contest_telemetry",
            "loadgen",
            "--hubs",
            "4",
            "--rate",
            "600",
            "--duration",
            "40",
            "--breach-share",
            "1",
            "--topic",
            topic_settings.events,
            "--bootstrap",
            kafka_broker.bootstrap,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with PrometheusServer([worker], rules, binary=prometheus) as server:
            server.wait_for(
                lambda: server.query('up{job="contest-telemetry"} == 1'),
                timeout=60,
                message="the worker's exporter scraped",
            )
            firing = server.wait_for(
                lambda: [a for a in server.firing(ALERT) if a["labels"].get("copy") == "for0s"],
                timeout=120,
                message=f"{ALERT} (for: 0s copy) firing",
            )
            assert {a["labels"]["hub"] for a in firing} & {
                "_all",
                "hub-0000",
                "hub-0001",
                "hub-0002",
                "hub-0003",
            }
            assert float(firing[0]["value"]) > 8
            server.wait_for(
                lambda: [
                    a
                    for a in server.alerts()
                    if a["labels"]["alertname"] == ALERT
                    and "copy" not in a["labels"]
                    and a["state"] in ("pending", "firing")
                ],
                timeout=60,
                message=f"the shipped {ALERT} (for: 5m) pending",
            )
            # The documented series, as Prometheus stored them.
            assert server.query('contest_arming_latency_seconds_bucket{le="8.0"}')
            assert server.query('contest_resolution_latency_seconds_bucket{le="0.8"}')
            assert server.query('contest_events_total{type="resolved"} > 0')
            assert server.query("contest_processed_events_total > 0")
            assert server.query('contest_budget_breached{stage="arming"} == 1')
            assert server.query('contest_resolution_latency_quantile_seconds{view="rolling",quantile="0.95"}')
            assert server.query("contest_window_watermark_seconds > 0")
            assert server.query("contest_newest_event_age_seconds")
            assert server.query("contest_consumer_lag_records")
            assert server.query("contest:arming_slo_errors:ratio_rate5m > 0.05")
    finally:
        loadgen.terminate()
        loadgen.wait(30)
    # A scrape of the worker under load passes promtool's lint.
    page = urllib.request.urlopen(f"http://{worker}/metrics", timeout=10).read()
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=page, capture_output=True, timeout=60, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
