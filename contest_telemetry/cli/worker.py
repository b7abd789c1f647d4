"""``contest-telemetry worker``: the stream worker (streams/) with its Prometheus exporter
(sinks/prometheus/). The one place the two are composed: the stream package reports through
:class:`streams.counters.CounterSink` and :class:`streams.snapshot.SnapshotSource`, which the
exporter implements and reads, and never imports a sink."""

from __future__ import annotations

import argparse
from typing import Any

from contest_telemetry.logs import announce

__all__ = ["run_with_exporter"]


def run_with_exporter(args: argparse.Namespace) -> int:
    """Run a worker that serves its Prometheus exporter (``CT_EXPORTER_*``) while it runs."""
    from prometheus_client import CollectorRegistry

    from sinks.prometheus import ExporterSettings, PipelineCollector, PipelineCounters, start_exporter
    from sinks.prometheus.labels import LabelCap
    from streams.cli import run_worker, settings_from_args
    from streams.health import WorkerHealth

    # A bad setting raises; the dispatcher's error path makes it one line naming the variable.
    settings, kafka, topics = settings_from_args(args)
    exporter = ExporterSettings()
    counters = PipelineCounters(
        hubs=LabelCap(
            exporter.max_hubs,
            max_length=exporter.max_label_length,
            idle_ticks=exporter.hub_idle_scrapes,
            max_folded=exporter.max_folded_hubs,
        )
    )
    registry = CollectorRegistry()
    health = WorkerHealth(settings)
    # Bound before anything connects: a port in use stops the worker at once with one line.
    server = start_exporter(registry, exporter, health) if exporter.enabled else None

    def on_app(app: Any) -> None:
        registry.register(PipelineCollector(counters, app.source))
        if server is not None:  # said once connected: a broker error stays the only line
            announce(__name__, f"worker: metrics at {server.url} (health: /healthz, /readyz)")

    try:
        return run_worker(settings, kafka, topics, counters, on_app, health)
    finally:
        if server is not None:
            server.stop()
