"""What the exporter reads from a worker at scrape time (the contract between streams/ and sinks/).

The stream processor implements :class:`SnapshotSource`; the exporter's collector calls
``snapshot()`` on every scrape, so series always describe the worker's current state (after a
rebalance, hubs this worker no longer owns simply disappear). Counters and histograms are pushed
by the worker into :class:`sinks.prometheus.counters.PipelineCounters` as it processes events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["HubWindowView", "LatencyDigest", "PipelineSnapshot", "SnapshotSource"]


class LatencyDigest(Protocol):
    """A quantile sketch of durations in milliseconds (DDSketch)."""

    @property
    def count(self) -> int: ...

    def quantile(self, q: float) -> float | None:
        """The q-quantile in ms (0 <= q <= 1), or None when empty."""
        ...


@dataclass(frozen=True)
class HubWindowView:
    """One hub's numbers for one view (the last closed window, or the rolling merge)."""

    hub: str
    arming: LatencyDigest
    resolution: LatencyDigest
    contests: int = 0
    participants_sum: int = 0
    participants_max: int = 0
    multi_actor: int = 0
    capacity_over_two: int = 0
    window_start_ms: int = 0
    window_end_ms: int = 0


@dataclass(frozen=True)
class PipelineSnapshot:
    """Everything window-shaped the exporter shows; keys of ``last``/``rolling`` are hub ids plus
    ``"_all"`` for the global aggregate."""

    last: dict[str, HubWindowView] = field(default_factory=dict)
    rolling: dict[str, HubWindowView] = field(default_factory=dict)
    watermark_ms: float | None = None
    newest_event_time_ms: float | None = None
    lag: dict[tuple[str, int], int] = field(default_factory=dict)


class SnapshotSource(Protocol):
    """Implemented by the worker.

    ``snapshot()`` is called by the exporter's HTTP server thread (not the worker's event loop),
    once per scrape: it must be safe to call from another thread and must return data that the
    worker does not mutate afterwards (copies of the dicts; digests that are not updated in
    place, or copies). It should be cheap: it runs on every scrape. Hub ids are raw (the exporter
    caps and bounds them); ``"_all"`` is the global aggregate. An exception is logged and leaves
    the window gauges out of that scrape (counters are still served).
    """

    def snapshot(self) -> PipelineSnapshot: ...
