"""Counters and histograms the worker pushes as it processes events (interface; see exporter).

The worker calls these once per batch with counts, not once per event, so the hot path stays
cheap; values are kept in plain dicts and turned into metric families at scrape time.

:class:`streams.counters.CounterSink` is the interface the stream processor is given (it belongs
to the stream); :class:`PipelineCounters` is the exporter's implementation (hub ids capped and folded into ``_other`` by a shared
:class:`~sinks.prometheus.labels.LabelCap`, histograms bucketed with ``bisect`` over the bucket
bounds in ms). It is thread safe: the worker writes from its event loop while the scrape thread
reads a consistent copy (:meth:`PipelineCounters.read`).
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field

from contest_telemetry.schema import ARMING_BUDGET_MS, EVENT_TYPES, RESOLUTION_BUDGET_MS, short_type
from sinks.prometheus.labels import DEFAULT_MAX_FOLDED, DEFAULT_MAX_LABEL_LENGTH, LabelCap
from streams.counters import DLQ_TRUNCATED, INGEST_LOST_OFFSETS, CounterSink

__all__ = [
    "ARMING_BUCKETS_MS",
    "EVENT_TYPES",
    "INVALID_REASONS",
    "RESOLUTION_BUCKETS_MS",
    "STATE_BOUNDS",
    "STATE_FLUSH_TRIGGERS",
    "CounterSink",
    "CountersView",
    "PipelineCounters",
]

# Histogram bucket upper bounds in ms (docs/metrics.md; exposed in seconds, +Inf implicit).
# The budgets (8 s, 0.8 s) are exact bounds so the SLO rules can read le="8.0" / le="0.8".
ARMING_BUCKETS_MS: tuple[float, ...] = (
    500,
    1_000,
    2_000,
    4_000,
    6_000,
    ARMING_BUDGET_MS,
    10_000,
    15_000,
    30_000,
    60_000,
)
RESOLUTION_BUCKETS_MS: tuple[float, ...] = (50, 100, 200, 400, 600, RESOLUTION_BUDGET_MS, 1_000, 2_000, 5_000)

INVALID_REASONS = ("decode", "validation", "envelope", "event_time", "hub_limit", "processing")
# streams/state.py: each bound on the worker's state, counted when it acts (docs/metrics.md).
STATE_BOUNDS = (
    "open_contests",
    "sketch_buckets",
    "idle_hubs",
    "hubs",
    "value_size",
    "participant_histogram",
)
STATE_FLUSH_TRIGGERS = ("interval", "events", "commit")
# Unknown event types / DLQ reasons given a label of their own beyond the documented ones; further
# ones fold into "_other" (docs/metrics.md, contest_exporter_label_values_folded_total).
_MAX_EXTRA_ENUM_VALUES = 16
# Folded types / reasons remembered (to count each once); these come from our own stages, not the
# fleet, so a handful is expected and this bound only stops a bug from growing the memory.
_MAX_FOLDED_ENUM_VALUES = 1_000
_INF = math.inf


@dataclass(frozen=True)
class CountersView:
    """A consistent copy of every counter, taken under the lock (what a scrape renders).

    Histogram rows are ``[count per bucket..., count over the last bound, sum in ms]`` (not cumulative).
    """

    events: dict[tuple[str, str], int]
    invalid: dict[str, int]
    late: dict[str, int]
    workflow_failures: dict[str, int]
    multi_actor: dict[str, int]
    capacity_over_two: dict[str, int]
    publisher_dropped: dict[str, int]
    expired_lifecycles: int
    processed: int
    arming: dict[str, list[float]]
    resolution: dict[str, list[float]]
    hubs_folded: int
    reread_records: int = 0
    reread_missing_offsets: int = 0
    stalls: int = 0
    state_bounds: dict[str, int] = field(default_factory=dict)
    state_writes: int = 0
    state_bytes: int = 0
    state_flushes: dict[str, int] = field(default_factory=dict)
    ingest_lost_offsets: int = 0
    dlq_truncated: int = 0
    # Per label ("type", "reason"): distinct values folded into "_other" (LabelCap.folded).
    label_values_folded: dict[str, int] = field(default_factory=dict)
    # Per label ("hub", "type", "reason"): folded values forgotten by the cap's bounded memory.
    folded_forgotten: dict[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> CountersView:
        return cls({}, {}, {}, {}, {}, {}, {}, 0, 0, {}, {}, 0)


class PipelineCounters(CounterSink):
    """The exporter's :class:`CounterSink`: plain dicts keyed by label value, one lock.

    ``PipelineCounters(max_hubs=500)`` (or ``hubs=LabelCap(...)`` to share a cap); pass the same
    instance to :class:`~sinks.prometheus.collector.PipelineCollector`, which reuses :attr:`hubs`
    for the snapshot-derived gauges so counters and gauges fold the same hubs.

    Non-finite or negative durations are ignored (the contract treats them as missing). Event types
    may be given as ``armed`` or ``telemetry.contest.armed``.
    """

    def __init__(
        self,
        max_hubs: int = 500,
        *,
        max_label_length: int = DEFAULT_MAX_LABEL_LENGTH,
        max_folded_hubs: int = DEFAULT_MAX_FOLDED,
        hubs: LabelCap | None = None,
    ) -> None:
        self.hubs = (
            hubs
            if hubs is not None
            else LabelCap(max_hubs, max_length=max_label_length, max_folded=max_folded_hubs)
        )
        self._types = LabelCap(
            _MAX_EXTRA_ENUM_VALUES, preset=EVENT_TYPES, reserved=(), max_folded=_MAX_FOLDED_ENUM_VALUES
        )
        self._reasons = LabelCap(
            _MAX_EXTRA_ENUM_VALUES, preset=INVALID_REASONS, reserved=(), max_folded=_MAX_FOLDED_ENUM_VALUES
        )
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str], int] = {}
        self._invalid: dict[str, int] = dict.fromkeys(INVALID_REASONS, 0)
        self._late: dict[str, int] = {}
        self._workflow_failures: dict[str, int] = {}
        self._multi_actor: dict[str, int] = {}
        self._capacity_over_two: dict[str, int] = {}
        self._publisher_dropped: dict[str, int] = {}
        self._expired_lifecycles = 0
        self._processed = 0
        self._reread_records = 0
        self._reread_missing = 0
        self._stalls = 0
        self._ingest_lost = 0
        self._dlq_truncated = 0
        self._state_bounds: dict[str, int] = dict.fromkeys(STATE_BOUNDS, 0)
        self._state_writes = 0
        self._state_bytes = 0
        self._state_flushes: dict[str, int] = dict.fromkeys(STATE_FLUSH_TRIGGERS, 0)
        self._arming: dict[str, list[float]] = {}
        self._resolution: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ CounterSink
    def events(self, hub: str, type: str, n: int = 1) -> None:
        key = (self.hubs.label(hub), self._types.label(short_type(type)))
        with self._lock:
            self._events[key] = self._events.get(key, 0) + n

    def invalid(self, reason: str, n: int = 1) -> None:
        if reason == INGEST_LOST_OFFSETS:  # carried with the dead-letter counts, not one of them
            with self._lock:
                self._ingest_lost += n
            return
        if reason == DLQ_TRUNCATED:  # the ingest stage's cut dead letters, carried likewise
            self.dlq_truncated(n)
            return
        label = self._reasons.label(reason)
        with self._lock:
            self._invalid[label] = self._invalid.get(label, 0) + n

    def dlq_truncated(self, n: int = 1) -> None:
        with self._lock:
            self._dlq_truncated += n

    def _add(self, table: dict[str, int], hub: str, n: int) -> None:
        label = self.hubs.label(hub)
        with self._lock:
            table[label] = table.get(label, 0) + n

    def late(self, hub: str, n: int = 1) -> None:
        self._add(self._late, hub, n)

    def workflow_failures(self, hub: str, n: int = 1) -> None:
        self._add(self._workflow_failures, hub, n)

    def multi_actor(self, hub: str, n: int = 1) -> None:
        self._add(self._multi_actor, hub, n)

    def capacity_over_two(self, hub: str, n: int = 1) -> None:
        self._add(self._capacity_over_two, hub, n)

    def publisher_dropped(self, hub: str, n: int) -> None:
        self._add(self._publisher_dropped, hub, n)

    def expired_lifecycles(self, n: int = 1) -> None:
        with self._lock:
            self._expired_lifecycles += n

    def processed(self, n: int) -> None:
        with self._lock:
            self._processed += n

    def reread(self, records: int, missing_offsets: int) -> None:
        with self._lock:
            self._reread_records += records
            self._reread_missing += missing_offsets

    def stalls(self, n: int = 1) -> None:
        with self._lock:
            self._stalls += n

    def state_bound(self, bound: str, n: int = 1) -> None:
        with self._lock:
            self._state_bounds[bound] = self._state_bounds.get(bound, 0) + n

    def state_writes(self, values: int, nbytes: int) -> None:
        with self._lock:
            self._state_writes += values
            self._state_bytes += nbytes

    def state_flush(self, trigger: str) -> None:
        with self._lock:
            self._state_flushes[trigger] = self._state_flushes.get(trigger, 0) + 1

    def observe_arming_ms(self, hub: str, values: Iterable[float]) -> None:
        self._observe(self._arming, ARMING_BUCKETS_MS, hub, values)

    def observe_resolution_ms(self, hub: str, values: Iterable[float]) -> None:
        self._observe(self._resolution, RESOLUTION_BUCKETS_MS, hub, values)

    def _observe(
        self, table: dict[str, list[float]], bounds: tuple[float, ...], hub: str, values: Iterable[float]
    ) -> None:
        label = self.hubs.label(hub)
        with self._lock:
            row = table.get(label)
            if row is None:
                row = table[label] = [0] * (len(bounds) + 1) + [0.0]
            total = 0.0
            for value in values:
                if 0.0 <= value < _INF:  # also rejects NaN
                    row[bisect_left(bounds, value)] += 1
                    total += value
            row[-1] += total

    def forget_hubs(self, labels: Iterable[str]) -> None:
        """Drop the rows of hub labels the cap freed (idle hubs, sinks/prometheus/labels.py), so
        hub churn does not grow these tables; a hub that comes back starts from 0 (a counter
        reset to Prometheus, which ``rate()``/``increase()`` handle). The collector calls it on
        each scrape that frees slots."""
        gone = set(labels)
        if not gone:
            return
        with self._lock:
            for table in (
                self._late,
                self._workflow_failures,
                self._multi_actor,
                self._capacity_over_two,
                self._publisher_dropped,
                self._arming,
                self._resolution,
            ):
                for label in gone.intersection(table):
                    del table[label]
            for key in [k for k in self._events if k[0] in gone]:
                del self._events[key]

    # ------------------------------------------------------------------ reading
    def read(self) -> CountersView:
        """A consistent copy of all values (cheap: the dicts hold at most cap + 2 hub keys)."""
        with self._lock:
            return CountersView(
                events=dict(self._events),
                invalid=dict(self._invalid),
                late=dict(self._late),
                workflow_failures=dict(self._workflow_failures),
                multi_actor=dict(self._multi_actor),
                capacity_over_two=dict(self._capacity_over_two),
                publisher_dropped=dict(self._publisher_dropped),
                expired_lifecycles=self._expired_lifecycles,
                processed=self._processed,
                arming={k: list(v) for k, v in self._arming.items()},
                resolution={k: list(v) for k, v in self._resolution.items()},
                hubs_folded=self.hubs.folded,
                reread_records=self._reread_records,
                reread_missing_offsets=self._reread_missing,
                stalls=self._stalls,
                ingest_lost_offsets=self._ingest_lost,
                dlq_truncated=self._dlq_truncated,
                state_bounds=dict(self._state_bounds),
                state_writes=self._state_writes,
                state_bytes=self._state_bytes,
                state_flushes=dict(self._state_flushes),
                label_values_folded={"type": self._types.folded, "reason": self._reasons.folded},
                folded_forgotten={
                    "hub": self.hubs.forgotten,
                    "type": self._types.forgotten,
                    "reason": self._reasons.forgotten,
                },
            )
