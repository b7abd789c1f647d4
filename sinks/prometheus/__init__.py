"""Prometheus exporter: metrics of a worker, collected at scrape time.

Wiring in a worker::

    settings = ExporterSettings()                       # CT_EXPORTER_* env
    counters = PipelineCounters(max_hubs=settings.max_hubs,
                                max_label_length=settings.max_label_length,
                                max_folded_hubs=settings.max_folded_hubs)  # the CounterSink
    registry = CollectorRegistry()
    registry.register(PipelineCollector(counters, source))   # source: a SnapshotSource
    server = start_exporter(registry, settings)        # ... server.stop() on shutdown
"""

from sinks.prometheus.collector import (
    ARMING_BUDGET_SECONDS,
    QUANTILES,
    RESOLUTION_BUDGET_SECONDS,
    PipelineCollector,
)
from sinks.prometheus.counters import (
    ARMING_BUCKETS_MS,
    EVENT_TYPES,
    INVALID_REASONS,
    RESOLUTION_BUCKETS_MS,
    CounterSink,
    CountersView,
    PipelineCounters,
)
from sinks.prometheus.exceptions import ExporterError, ExporterStartError
from sinks.prometheus.labels import ALL, OTHER, LabelCap, bound_label
from sinks.prometheus.server import ExporterServer, start_exporter
from sinks.prometheus.settings import ExporterSettings
from streams.snapshot import HubWindowView, LatencyDigest, PipelineSnapshot, SnapshotSource

__all__ = [
    "ALL",
    "ARMING_BUCKETS_MS",
    "ARMING_BUDGET_SECONDS",
    "EVENT_TYPES",
    "INVALID_REASONS",
    "OTHER",
    "QUANTILES",
    "RESOLUTION_BUCKETS_MS",
    "RESOLUTION_BUDGET_SECONDS",
    "CounterSink",
    "CountersView",
    "ExporterError",
    "ExporterServer",
    "ExporterSettings",
    "ExporterStartError",
    "HubWindowView",
    "LabelCap",
    "LatencyDigest",
    "PipelineCollector",
    "PipelineCounters",
    "PipelineSnapshot",
    "SnapshotSource",
    "bound_label",
    "start_exporter",
]
