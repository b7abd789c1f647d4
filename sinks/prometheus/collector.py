"""The exporter's custom collector: every family is built at scrape time.

``collect()`` reads a consistent copy of :class:`~sinks.prometheus.counters.PipelineCounters` and
calls :meth:`SnapshotSource.snapshot` once, so window gauges always describe the worker's current
state: after a rebalance, hubs this worker no longer owns are simply absent from the snapshot and
their gauges disappear (counters and histograms are cumulative and keep their series, until the
hub's label is freed for being idle, see below).

Hub labels go through the same :class:`~sinks.prometheus.labels.LabelCap` as the counters, so a
hub has its own label everywhere or nowhere. Each ``collect()`` is one tick of the cap: slots of
hubs unused for ``idle_ticks`` scrapes are freed (docs/metrics.md, "Hub labels"), and counter rows
are only exported for labels the cap holds now, so a freed hub's series leave the page. The
snapshot's ``"_all"`` key is the aggregate and is labelled ``_all``; a real hub whose id starts
with ``_`` gets the cap's prefix (``hub:_other``), in counters and gauges alike.

Hubs folded into ``_other`` (beyond the cap) have no snapshot-derived gauges at all (quantiles,
budget breached, participants): :class:`LatencyDigest` has no merge in the agreed interface, and
merging/iterating ~100k folded hubs on every scrape would blow the scrape-time budget (the scrape
cost stays O(labelled hubs)). Folded hubs stay visible
through the ``hub="_other"`` counters and histograms (the burn-rate alerts read those) and through
the ``hub="_all"`` gauges (the worker's global aggregate, which the cap never folds).

Families are :class:`CompactFamily` objects: ordinary ``prometheus_client`` ``Metric`` objects
(``registry.get_sample_value``, ``generate_latest`` work) whose samples are stored as rows and
materialized on demand, and which render themselves to the text format quickly
(:meth:`CompactFamily.text`, used by :func:`sinks.prometheus.server.render_text`).

Names, labels and buckets: docs/metrics.md.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from contest_telemetry.schema import ARMING_BUDGET_MS, RESOLUTION_BUDGET_MS
from sinks.prometheus.counters import (
    ARMING_BUCKETS_MS,
    RESOLUTION_BUCKETS_MS,
    CountersView,
    PipelineCounters,
)
from sinks.prometheus.labels import ALL
from streams.snapshot import HubWindowView, PipelineSnapshot, SnapshotSource

__all__ = [
    "ARMING_BUDGET_SECONDS",
    "QUANTILES",
    "QUANTILE_FAMILY_TYPE",
    "RESOLUTION_BUDGET_SECONDS",
    "CompactFamily",
    "PipelineCollector",
    "format_value",
]

log = logging.getLogger(__name__)

ARMING_BUDGET_SECONDS = ARMING_BUDGET_MS / 1000
RESOLUTION_BUDGET_SECONDS = RESOLUTION_BUDGET_MS / 1000
QUANTILES: tuple[float, ...] = (0.5, 0.95, 0.99)
_VIEWS = ("last", "rolling")
# docs/metrics.md calls the quantile families gauges, but `promtool check metrics` rejects a
# `quantile` label on any type but summary ("non-summary metrics should not have "quantile"
# label"). They are exposed as summaries made of quantile samples only (the digest has no sum, so
# no _sum/_count): same series names, labels and values as the documented gauges, so the rules and
# the dashboard are unaffected; only the TYPE line differs. Set to "gauge" to follow the table.
QUANTILE_FAMILY_TYPE = "summary"
_INF = math.inf


def format_value(value: float) -> str:
    """A sample value in the text format (ints without a fraction, +Inf/-Inf/NaN spelled out)."""
    if value.__class__ is int:
        return str(value)
    if value != value:
        return "NaN"
    if value == _INF:
        return "+Inf"
    if value == -_INF:
        return "-Inf"
    return repr(float(value))


def _le_labels(bounds_ms: Sequence[float]) -> tuple[str, ...]:
    return (*(floatToGoString(b / 1000) for b in bounds_ms), "+Inf")


_ARMING_LE = _le_labels(ARMING_BUCKETS_MS)
_RESOLUTION_LE = _le_labels(RESOLUTION_BUCKETS_MS)


class CompactFamily(Metric):
    """A counter/gauge/histogram family kept as rows: ``(label values, value)``, or for a histogram
    ``(label values, cumulative bucket counts, sum)`` with bucket bounds ``les``.

    ``samples`` is computed from the rows when read (same samples as prometheus_client's
    ``*MetricFamily`` classes); :meth:`text` renders the rows straight to the text format.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        typ: str,
        labels: Sequence[str] = (),
        les: Sequence[str] = (),
    ) -> None:
        if typ == "counter" and name.endswith("_total"):
            name = name[: -len("_total")]
        self.label_names = tuple(labels)
        self.les = tuple(les)
        self.rows: list[tuple[Any, ...]] = []
        super().__init__(name, documentation, typ)

    # Metric.__init__ assigns ``self.samples = []``; the rows are the storage.
    @property  # type: ignore[override]
    def samples(self) -> list[Sample]:
        return list(self._samples())

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        if value:
            raise AttributeError("CompactFamily samples are built from rows; use add()/add_histogram()")

    def add(self, label_values: Sequence[str], value: float) -> None:
        self.rows.append((tuple(label_values), value))

    def add_histogram(self, label_values: Sequence[str], cumulative: Sequence[int], sum_value: float) -> None:
        """``cumulative[i]`` observations <= ``les[i]`` (the last one is +Inf, i.e. the count)."""
        self.rows.append((tuple(label_values), tuple(cumulative), sum_value))

    def _samples(self) -> Iterator[Sample]:
        names = self.label_names
        if self.type == "histogram":
            for values, cumulative, sum_value in self.rows:
                labels = dict(zip(names, values, strict=True))
                for le, n in zip(self.les, cumulative, strict=True):
                    yield Sample(f"{self.name}_bucket", {**labels, "le": le}, n, None, None)
                yield Sample(f"{self.name}_count", labels, cumulative[-1], None, None)
                yield Sample(f"{self.name}_sum", labels, sum_value, None, None)
            return
        sample_name = f"{self.name}_total" if self.type == "counter" else self.name
        for values, value in self.rows:
            yield Sample(sample_name, dict(zip(names, values, strict=True)), value, None, None)

    def text(self, escape: Callable[[str], str]) -> list[str]:
        """Lines of the text exposition format (``# HELP``/``# TYPE`` included); ``escape`` escapes
        a label value (the renderer caches it across families)."""
        name = self.name
        sample_name = f"{name}_total" if self.type == "counter" else name
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {sample_name} {doc}\n# TYPE {sample_name} {self.type}\n"]
        append = lines.append
        names = self.label_names
        if self.type == "histogram":
            les = self.les
            for values, cumulative, sum_value in self.rows:
                labels = ",".join([f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)])
                bucket = f"{name}_bucket{{{labels},le=" if labels else f"{name}_bucket{{le="
                append("".join([f'{bucket}"{le}"}} {n}\n' for le, n in zip(les, cumulative, strict=True)]))
                tail = f"{{{labels}}}" if labels else ""
                append(f"{name}_count{tail} {cumulative[-1]}\n{name}_sum{tail} {format_value(sum_value)}\n")
            return lines
        for values, value in self.rows:
            if values:
                labels = ",".join([f'{n}="{escape(v)}"' for n, v in zip(names, values, strict=True)])
                append(f"{sample_name}{{{labels}}} {format_value(value)}\n")
            else:
                append(f"{sample_name} {format_value(value)}\n")
        return lines


class PipelineCollector(Collector):
    """``registry.register(PipelineCollector(counters, source))``.

    ``source`` may be None (counters only, e.g. before the worker has state); ``clock`` returns
    wall-clock unix seconds (for ``contest_newest_event_age_seconds``). ``snapshot()`` is called
    from the HTTP server's thread, once per scrape.
    """

    def __init__(
        self,
        counters: PipelineCounters,
        source: SnapshotSource | None = None,
        *,
        arming_budget_seconds: float = ARMING_BUDGET_SECONDS,
        resolution_budget_seconds: float = RESOLUTION_BUDGET_SECONDS,
        quantiles: Sequence[float] = QUANTILES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.counters = counters
        self.source = source
        self.budgets = {"arming": arming_budget_seconds, "resolution": resolution_budget_seconds}
        self.quantiles = tuple(quantiles)
        self._quantile_labels = tuple(floatToGoString(q) for q in self.quantiles)
        self.clock = clock

    # ------------------------------------------------------------------ registry protocol
    def describe(self) -> list[Metric]:
        """Empty families with the right names and types: registering never calls ``snapshot()``,
        and a second registration in the same registry fails on the duplicate names."""
        return [*self._counter_families(CountersView.empty()), *self._snapshot_families(None)]

    def collect(self) -> Iterator[Metric]:
        hubs = self.counters.hubs
        released = hubs.tick()
        if released:
            # Drop the freed hubs' rows so hub churn cannot grow the counters' tables; a hub that
            # gets a slot again starts from 0, a counter reset rate()/increase() handle. A count
            # racing the free may leave a row for a label no longer held: _held_only hides it.
            self.counters.forget_hubs(released)
        snapshot: PipelineSnapshot | None = None
        if self.source is not None:
            try:
                snapshot = self.source.snapshot()
            except Exception:  # a broken snapshot must not take the counters down with it
                log.exception("snapshot() failed; window gauges left out of this scrape")
        # Snapshot first: while the cap has room, its hubs may take label slots.
        families = self._snapshot_families(snapshot)
        view = self.counters.read()
        if hubs.released:
            view = self._held_only(view, hubs.held())
        yield from self._counter_families(view)
        yield from families

    @staticmethod
    def _held_only(v: CountersView, held: Collection[str]) -> CountersView:
        """``v`` without the rows of hub labels the cap no longer holds (freed slots)."""

        def per_hub(table: dict[str, Any]) -> dict[str, Any]:
            return {hub: value for hub, value in table.items() if hub in held}

        return dataclasses.replace(
            v,
            events={key: n for key, n in v.events.items() if key[0] in held},
            late=per_hub(v.late),
            workflow_failures=per_hub(v.workflow_failures),
            multi_actor=per_hub(v.multi_actor),
            capacity_over_two=per_hub(v.capacity_over_two),
            publisher_dropped=per_hub(v.publisher_dropped),
            arming=per_hub(v.arming),
            resolution=per_hub(v.resolution),
        )

    # ------------------------------------------------------------------ counters and histograms
    def _counter_families(self, v: CountersView) -> Iterator[Metric]:
        yield self._histogram(
            "contest_arming_latency_seconds",
            "Arming latency of every observed duration (seconds); buckets include the 8 s budget.",
            v.arming,
            _ARMING_LE,
        )
        yield self._histogram(
            "contest_resolution_latency_seconds",
            "Resolution latency of every observed duration (seconds); buckets include the 0.8 s budget.",
            v.resolution,
            _RESOLUTION_LE,
        )
        events = CompactFamily(
            "contest_events_total", "Valid events processed, by hub and type.", "counter", ["hub", "type"]
        )
        events.rows.extend(v.events.items())
        yield events
        yield self._per_label(
            "contest_invalid_events_total",
            "Records/events sent to the dead-letter topic, by reason.",
            "reason",
            v.invalid,
        )
        yield self._per_label(
            "contest_state_bounded_total",
            "Times a bound on the worker's state acted (expired overflow contests, collapsed sketch "
            "values, evicted idle hubs, oversized values, folded histogram values), by bound.",
            "bound",
            v.state_bounds,
        )
        yield self._per_label(
            "contest_state_flushes_total",
            "Times the worker wrote its staged state to the changelog, by trigger (interval: "
            "CT_WORKER_STATE_FLUSH_S passed; events: CT_WORKER_STATE_FLUSH_EVENTS applied; commit: "
            "before an offset commit, a rebalance or a shutdown).",
            "trigger",
            v.state_flushes,
        )
        for name, doc, table in (
            (
                "contest_late_events_total",
                "Events older than the watermark minus the grace (counted, archived, not windowed).",
                v.late,
            ),
            ("contest_workflow_failures_total", "workflowFailed events.", v.workflow_failures),
            (
                "contest_multi_actor_contests_total",
                "Finished contests with participantCount > 2.",
                v.multi_actor,
            ),
            (
                "contest_capacity_over_two_total",
                "Finished contests with participantCapacity > 2.",
                v.capacity_over_two,
            ),
            (
                "contest_publisher_dropped_events_total",
                "Events a hub's publisher dropped because its buffer was full (reported in envelopes).",
                v.publisher_dropped,
            ),
        ):
            yield self._per_label(name, doc, "hub", table)
        for name, doc, value in (
            (
                "contest_expired_lifecycles_total",
                "Open contests dropped by the lifecycle TTL without finishing.",
                v.expired_lifecycles,
            ),
            ("contest_processed_events_total", "Events applied to state by this worker.", v.processed),
            (
                "contest_dlq_payloads_truncated_total",
                "Dead letters whose payload was cut to CT_TOPIC_DLQ_MAX_BYTES (payloadTruncated).",
                v.dlq_truncated,
            ),
            (
                "contest_input_reread_records_total",
                "Input records the stream skipped before the state applied them, read again by the worker.",
                v.reread_records,
            ),
            (
                "contest_input_missing_offsets_total",
                "Offsets absent from the input log inside re-read ranges (transaction markers, retention).",
                v.reread_missing_offsets,
            ),
            (
                "contest_ingest_lost_offsets_total",
                "Offsets of contest.events retention deleted before the ingest stage read them.",
                v.ingest_lost_offsets,
            ),
            (
                "contest_input_stalls_total",
                "Owned input partitions found with records waiting and nothing applied, put back into fetching.",
                v.stalls,
            ),
            (
                "contest_state_changelog_writes_total",
                "State values (and tombstones) written to the changelog.",
                v.state_writes,
            ),
            (
                "contest_state_changelog_bytes_total",
                "Bytes of state values written to the changelog (keys excluded).",
                v.state_bytes,
            ),
            (
                "contest_exporter_hub_labels_folded_total",
                'Distinct hub ids folded into hub="_other" by the label cap.',
                self.counters.hubs.folded,
            ),
            (
                "contest_exporter_hub_labels_freed_total",
                "Hub label slots given back after CT_EXPORTER_HUB_IDLE_SCRAPES scrapes without a use.",
                self.counters.hubs.released,
            ),
        ):
            family = CompactFamily(name, doc, "counter")
            family.add((), value)
            yield family
        yield self._per_label(
            "contest_exporter_label_values_folded_total",
            'Distinct event types / dead-letter reasons folded into "_other" once the slots for '
            "values beyond the documented ones are taken, by label.",
            "label",
            v.label_values_folded,
        )
        yield self._per_label(
            "contest_exporter_folded_ids_forgotten_total",
            "Folded label values forgotten by the label cap's bounded memory (hub: beyond "
            "CT_EXPORTER_MAX_FOLDED_HUBS); a forgotten value that folds again is counted again as folded.",
            "label",
            v.folded_forgotten,
        )

    @staticmethod
    def _per_label(name: str, doc: str, label: str, table: dict[str, int]) -> CompactFamily:
        family = CompactFamily(name, doc, "counter", [label])
        family.rows.extend(((key,), n) for key, n in table.items())
        return family

    @staticmethod
    def _histogram(name: str, doc: str, table: dict[str, list[float]], les: Sequence[str]) -> CompactFamily:
        family = CompactFamily(name, doc, "histogram", ["hub"], les)
        add = family.add_histogram
        for hub, row in table.items():
            cumulative: list[int] = []
            acc = 0
            for n in row[:-1]:  # row[-1] is the sum in ms
                acc += int(n)
                cumulative.append(acc)
            add((hub,), cumulative, row[-1] / 1000)
        return family

    # ------------------------------------------------------------------ window gauges
    def _snapshot_families(self, snapshot: PipelineSnapshot | None) -> list[Metric]:
        quantile = {
            stage: CompactFamily(
                f"contest_{stage}_latency_quantile_seconds",
                f"{stage.capitalize()} latency quantile (seconds) from the DDSketch digests; "
                "view=last: last closed window, view=rolling: last N closed windows merged.",
                QUANTILE_FAMILY_TYPE,
                ["hub", "view", "quantile"],
            )
            for stage in ("arming", "resolution")
        }
        breached = CompactFamily(
            "contest_budget_breached",
            "1 when the rolling-view p95 exceeds the budget, else 0.",
            "gauge",
            ["hub", "stage"],
        )
        budget = CompactFamily("contest_budget_seconds", "Latency budget (p95), seconds.", "gauge", ["stage"])
        for stage, seconds in self.budgets.items():
            budget.add((stage,), seconds)
        average = CompactFamily(
            "contest_participants_average",
            "Average participants per finished contest, rolling view.",
            "gauge",
            ["hub"],
        )
        maximum = CompactFamily(
            "contest_participants_max",
            "Max participants per finished contest, rolling view.",
            "gauge",
            ["hub"],
        )
        lag = CompactFamily(
            "contest_consumer_lag_records",
            "High watermark minus the worker's position.",
            "gauge",
            ["topic", "partition"],
        )
        age = CompactFamily(
            "contest_newest_event_age_seconds",
            "Wall-clock now minus the event time of the newest event processed (pipeline freshness).",
            "gauge",
        )
        watermark = CompactFamily(
            "contest_window_watermark_seconds", "Event-time watermark (unix seconds).", "gauge"
        )
        families: list[Metric] = [*quantile.values(), breached, budget, average, maximum, lag, age, watermark]
        if snapshot is None:
            return families

        kept_of = self.counters.hubs.kept_of
        quantiles = tuple(zip(self.quantiles, self._quantile_labels, strict=True))
        arming_rows, resolution_rows = quantile["arming"].rows, quantile["resolution"].rows
        arming_budget, resolution_budget = self.budgets["arming"], self.budgets["resolution"]
        for view_name in _VIEWS:
            views: dict[str, HubWindowView] = getattr(snapshot, view_name)
            rolling = view_name == "rolling"
            pairs = kept_of(views.keys(), skip=(ALL,))
            if ALL in views:  # the aggregate (a real hub named _all is labelled hub:_all)
                pairs.append((ALL, ALL))
            for hub, label in pairs:
                w = views[hub]
                arming, resolution = w.arming, w.resolution
                for q, q_label in quantiles:
                    value = arming.quantile(q)
                    if value is not None:
                        arming_rows.append(((label, view_name, q_label), value / 1000))
                    value = resolution.quantile(q)
                    if value is not None:
                        resolution_rows.append(((label, view_name, q_label), value / 1000))
                if rolling:
                    p95 = arming.quantile(0.95)
                    breached.add((label, "arming"), int(p95 is not None and p95 / 1000 > arming_budget))
                    p95 = resolution.quantile(0.95)
                    breached.add(
                        (label, "resolution"), int(p95 is not None and p95 / 1000 > resolution_budget)
                    )
                    if w.contests > 0:
                        average.add((label,), w.participants_sum / w.contests)
                        maximum.add((label,), w.participants_max)
        for (topic, partition), records in sorted(snapshot.lag.items()):
            lag.add((topic, str(partition)), records)
        if snapshot.newest_event_time_ms is not None:
            age.add((), self.clock() - snapshot.newest_event_time_ms / 1000)
        if snapshot.watermark_ms is not None:
            watermark.add((), snapshot.watermark_ms / 1000)
        return families
