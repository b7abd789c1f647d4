"""The PrometheusServer test helper against a real prometheus binary and a prometheus_client page."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.helpers.prometheus_server import PrometheusServer, find_prometheus

RULES = """\
groups:
  - name: helper-test
    rules:
      - alert: TestGaugeHigh
        expr: test_gauge > 1
        for: 0s
        labels:
          severity: ticket
        annotations:
          summary: "test_gauge is {{ $value }}"
"""


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    binary = find_prometheus()
    if binary is None:
        message = "the prometheus server binary is not installed (apt-get install prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


@pytest.fixture
def metrics_page() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge("test_gauge", "A gauge for the helper test", registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{server.server_port}", gauge
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _value(result: list[dict]) -> float | None:
    return float(result[0]["value"][1]) if result else None


def test_scrapes_and_fires_alert(prometheus_binary: str, metrics_page: tuple[str, Gauge], tmp_path: Path):
    target, gauge = metrics_page
    gauge.set(0.5)
    rule_file = tmp_path / "helper.rules.yml"
    rule_file.write_text(RULES)

    with PrometheusServer([target], rule_files=[rule_file], binary=prometheus_binary) as prom:
        assert prom.query("vector(1)")[0]["value"][1] == "1"
        prom.wait_for(lambda: prom.query('up{job="contest-telemetry"} == 1'), timeout=30, message="target up")
        prom.wait_for(lambda: _value(prom.query("test_gauge")) == 0.5, timeout=30, message="test_gauge 0.5")
        assert prom.alerts() == []

        gauge.set(3)
        firing = prom.wait_for(lambda: prom.firing("TestGaugeHigh"), timeout=30, message="alert firing")
        alert = firing[0]
        assert alert["labels"]["severity"] == "ticket"
        assert alert["labels"]["job"] == "contest-telemetry"
        assert alert["labels"]["instance"] == target
        assert alert["annotations"]["summary"] == "test_gauge is 3"

        gauge.set(0)
        prom.wait_for(lambda: not prom.alerts(), timeout=30, message="alert resolved")

        process = prom.process
        assert process is not None
    assert process.poll() is not None, "stop() must end the prometheus process"
    assert prom.process is None


def test_query_error_is_reported(prometheus_binary: str):
    from tests.helpers.prometheus_server import PrometheusError

    with PrometheusServer([], binary=prometheus_binary) as prom:
        with pytest.raises(PrometheusError, match="bad_data"):
            prom.query("sum(")
        assert prom.query("1 + 1") and prom.query("1 + 1")[0][1] == "2"
