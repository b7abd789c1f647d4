"""contest_telemetry/healthcheck.py names the exporters' ports without importing their settings
(a container healthcheck runs every few seconds; the settings cost ~1 s to import): the defaults
and env names it copies must stay those of the settings classes."""

from __future__ import annotations

import pytest

from contest_telemetry.healthcheck import default_url
from sinks.archive.metrics import ArchiverExporterSettings
from sinks.prometheus.settings import ExporterSettings


def test_default_ports_are_the_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CT_EXPORTER_PORT", raising=False)
    monkeypatch.delenv("CT_ARCHIVER_EXPORTER_PORT", raising=False)
    worker = ExporterSettings().port
    archiver = ArchiverExporterSettings().port
    assert default_url(["python", "-m", "streams", "worker"]) == f"http://127.0.0.1:{worker}/healthz"
    assert default_url(["contest-telemetry", "archive", "run"]) == f"http://127.0.0.1:{archiver}/healthz"


def test_ports_follow_the_settings_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CT_EXPORTER_PORT", "19464")
    monkeypatch.setenv("CT_ARCHIVER_EXPORTER_PORT", "19465")
    assert ExporterSettings().port == 19464 and ArchiverExporterSettings().port == 19465
    assert default_url(["contest-telemetry", "worker"]).endswith(":19464/healthz")
    assert default_url(["contest-telemetry", "archive", "run"]).endswith(":19465/healthz")
