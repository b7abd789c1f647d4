"""The archiver on Prometheus: its exporter (``CT_ARCHIVER_EXPORTER_*``), metrics and health.

The archive loop (sinks/archive/runner.py) tells an :class:`ArchiveObserver` three things: which
partitions it archives (``assigned``), what it committed to the manifest (``committed``) and,
about once a second, where each partition stands (``tick``). The exporter's threads read the
observer and the run's :class:`~sinks.archive.runner.ArchiveStats` at scrape time; the server is
the bounded one of the worker (sinks/prometheus/server.py).

``/healthz`` fails when a partition had records waiting and its read position did not move for
``CT_ARCHIVER_EXPORTER_STALL_S``, or the loop reported nothing for that long; ``/readyz`` passes
once the manifest was recovered and the partitions are assigned (and the archiver is live).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contest_telemetry.health import ProgressWatch, Verdict
from sinks.archive.manifest import ManifestEntry
from sinks.prometheus.server import ExporterServer, start_exporter
from sinks.prometheus.settings import ExporterServerSettings, ServerConnections, ServerPort, ServerThreads

if TYPE_CHECKING:
    from sinks.archive.runner import ArchiveRun, ArchiveStats

__all__ = ["ArchiveCollector", "ArchiveObserver", "ArchiverExporterSettings", "start_archive_exporter"]

_TICK_S = 1.0  # the loop's position report: often enough for a 15 s scrape, cheap for the loop


def _watch_key(topic: str, partition: int) -> str:
    """A partition's key in the :class:`ProgressWatch` (and in /healthz's ``stalledPartitions``)."""
    return f"{topic}[{partition}]"


class ArchiverExporterSettings(ExporterServerSettings):
    """Where the archiver serves ``/metrics``, ``/healthz`` and ``/readyz`` (env prefix ``CT_ARCHIVER_EXPORTER_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_ARCHIVER_EXPORTER_", extra="ignore", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="Serve the archiver's /metrics, /healthz and /readyz.")
    port: ServerPort = 9465
    stall_s: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="/healthz fails when a partition has had records waiting and none archived for this long, or the archive loop reported nothing for this long.",
    )
    threads: ServerThreads = 2
    max_connections: ServerConnections = 64


class ArchiveObserver:
    """Health state and per-partition lag of one archive run. ``assigned``/``committed``/``tick``
    run on the archive loop; ``liveness``/``readiness``/``snapshot`` on the exporter's threads."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.progress = ProgressWatch(stall_s, clock)
        self._lock = threading.Lock()
        self._partitions: list[tuple[str, int]] = []
        self._lag: dict[tuple[str, int], int] = {}
        self._started = clock()
        self._last_commit: float | None = None
        self._next_tick = 0.0
        self.chunks = 0
        self.chunk_bytes = 0

    # ------------------------------------------------------------------ the archive loop
    def assigned(self, tps: Iterable[Any]) -> None:
        """The partitions archived from now on (``TopicPartition``s), after the manifest was read."""
        partitions = [(tp.topic, tp.partition) for tp in tps]
        with self._lock:
            self._partitions = partitions
        self.progress.forget({_watch_key(topic, partition) for topic, partition in partitions})

    def committed(self, entries: Iterable[ManifestEntry]) -> None:
        """Entries just appended to the manifest (chunks and gaps: gaps count in the run's stats)."""
        with self._lock:
            for entry in entries:
                if not entry.is_gap:
                    self.chunks += 1
                    self.chunk_bytes += entry.size
            self._last_commit = self.clock()

    def tick(self, consumer: Any, store: Any, tps: Iterable[Any]) -> None:
        """Where each partition stands: the store's next offset against the broker's end (the last
        stable offset: the archiver reads committed records only). At most once per ``_TICK_S``."""
        now = self.clock()
        if now < self._next_tick:
            return
        self._next_tick = now + _TICK_S
        lag: dict[tuple[str, int], int] = {}
        for tp in tps:
            key = (tp.topic, tp.partition)
            end = consumer.last_stable_offset(tp)
            if end is None or end < 0:
                end = consumer.highwater(tp)
            position = store.read_position(tp.topic, tp.partition)
            if end is None:
                continue  # not fetched yet: unknown, not zero
            if position is None:
                if end > 0:
                    continue  # nothing read yet: its log start (the position) is not known here
                position = 0
            lag[key] = max(0, end - position)
            self.progress.observe(_watch_key(tp.topic, tp.partition), position, end > position)
        self.progress.beat()
        with self._lock:
            self._lag = lag

    # ------------------------------------------------------------------ the exporter's threads
    def snapshot(self) -> tuple[dict[tuple[str, int], int], float, int, int]:
        """``(lag, seconds since the last manifest commit or the start, chunks, bytes)``."""
        now = self.clock()
        with self._lock:
            since = now - (self._last_commit if self._last_commit is not None else self._started)
            return dict(self._lag), since, self.chunks, self.chunk_bytes

    def liveness(self) -> Verdict:
        failing = self.progress.liveness()
        if failing is not None:
            return failing
        with self._lock:
            lag = sum(self._lag.values())
        return Verdict(True, "archiving", {"lagRecords": lag})

    def readiness(self) -> Verdict:
        live = self.liveness()
        if not live.ok:
            return Verdict(False, live.reason, live.details)
        with self._lock:
            partitions = list(self._partitions)
        if not partitions:
            return Verdict(False, "recovering the manifest and assigning partitions")
        return Verdict(True, "partitions assigned, manifest recovered", {"partitions": len(partitions)})


class ArchiveCollector:
    """The archiver's metric families (documented in docs/metrics.md), built at scrape time."""

    def __init__(self, observer: ArchiveObserver, stats: ArchiveStats) -> None:
        self.observer = observer
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        lag, since, chunks, chunk_bytes = self.observer.snapshot()
        stats = self.stats
        family = GaugeMetricFamily(
            "contest_archiver_lag_records",
            "Records in Kafka after the archiver's read position, per partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(lag.items()):
            family.add_metric([topic, str(partition)], value)
        yield family
        records = CounterMetricFamily(
            "contest_archiver_records",
            "Kafka records read into the archive (envelopes count once), per topic.",
            labels=["topic"],
        )
        lines = CounterMetricFamily(
            "contest_archiver_lines", "NDJSON lines written to the archive, per topic.", labels=["topic"]
        )
        for topic, counts in sorted(dict(stats.by_topic).items()):
            records.add_metric([topic], counts.get("records", 0))
            lines.add_metric([topic], counts.get("lines", 0))
        yield records
        yield lines
        yield CounterMetricFamily(
            "contest_archiver_bytes", "Compressed bytes of chunk files closed.", value=chunk_bytes
        )
        yield CounterMetricFamily(
            "contest_archiver_chunks", "Chunk files closed and listed in the manifest.", value=chunks
        )
        yield CounterMetricFamily(
            "contest_archiver_gaps",
            "Gaps recorded in the manifest: offsets deleted (retention) before they were archived.",
            value=stats.gaps,
        )
        yield CounterMetricFamily(
            "contest_archiver_missing_offsets", "Offsets in the recorded gaps.", value=stats.missing_offsets
        )
        yield CounterMetricFamily(
            "contest_archiver_commit_failures",
            "Offset commits to the archiver's group that failed (the manifest still holds the position).",
            value=stats.commit_failures,
        )
        yield CounterMetricFamily(
            "contest_archiver_storage_retries",
            "Object-store requests retried after a transient failure (each bounded by CT_ARCHIVE_S3_MAX_RETRIES).",
            value=stats.storage_retries,
        )
        yield GaugeMetricFamily(
            "contest_archiver_seconds_since_last_commit",
            "Seconds since the archiver last committed a chunk or gap to the manifest (since its start when none yet).",
            value=round(since, 3),
        )


def start_archive_exporter(run: ArchiveRun, settings: ArchiverExporterSettings) -> ExporterServer | None:
    """Attach an observer to ``run`` and serve it (None when ``settings.enabled`` is false).
    Called before anything connects, so a port in use stops the command at once
    (:class:`~sinks.prometheus.exceptions.ExporterStartError`)."""
    if not settings.enabled:
        return None
    observer = ArchiveObserver(settings.stall_s)
    registry = CollectorRegistry()
    registry.register(ArchiveCollector(observer, run.stats))  # type: ignore[arg-type]
    server = start_exporter(registry, settings, observer)
    run.observer = observer
    return server
