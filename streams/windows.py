"""Event-time tumbling windows: per-window aggregates, closing on a watermark, result payloads.

A window ``[start, start + size)`` of a hub holds two DDSketches (arming and resolution latency,
ms) and the participant table of the contests that finished in it. Windows are numbered
``idx = floor(t / size)``. The worker keeps one watermark per input partition (the largest event
time it has applied there); ``closed_index(watermark)`` is the first window index that is still
open: every window with ``(idx + 1) * size + grace <= watermark`` is closed. An event whose
window index is below the closed index *before* its record is late: it is counted (in the
window that holds the watermark) and its durations are not windowed; the lifecycle join (the
archive) still takes it. Closing depends only on event time, never on wall-clock time, so a
replay or backfill closes the same windows with the same contents.
"""

from __future__ import annotations

import math
from typing import Any

from contest_telemetry.schema import MULTI_ACTOR_OVER, ms_to_iso
from streams.sketch import DEFAULT_MAX_BUCKETS, DDSketch

__all__ = ["MAX_HISTOGRAM_KEYS", "QUANTILES", "WindowAgg", "closed_index", "window_index"]

QUANTILES = (0.5, 0.95, 0.99)
MAX_HISTOGRAM_KEYS = 64
"""Distinct participant counts in one window's histogram; others are left out of the histogram
only (samples, sum, max and the >2 counts stay exact) and counted by the worker."""


def window_index(t_ms: float, size_ms: int) -> int:
    return math.floor(t_ms / size_ms)


def closed_index(watermark_ms: float | None, size_ms: int, grace_ms: int) -> int | None:
    """Windows with an index below this are closed at ``watermark_ms`` (None: nothing closed)."""
    if watermark_ms is None:
        return None
    return math.floor((watermark_ms - grace_ms) / size_ms)


class WindowAgg:
    """What one window of one hub (or of ``_all``) has seen."""

    __slots__ = (
        "arming",
        "capacity_over_two",
        "contests",
        "events",
        "hist",
        "late_events",
        "multi_actor",
        "participant_samples",
        "participants_max",
        "participants_sum",
        "resolution",
        "start",
    )

    def __init__(self, start: int, alpha: float, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        self.start = start
        self.arming = DDSketch(alpha, max_buckets)
        self.resolution = DDSketch(alpha, max_buckets)
        self.events = 0
        self.contests = 0
        self.participant_samples = 0
        self.participants_sum = 0
        self.participants_max = 0
        self.hist: dict[int, int] = {}
        self.multi_actor = 0
        self.capacity_over_two = 0
        self.late_events = 0

    def add_contest(self, participants: int | None, capacity: int | None) -> bool:
        """Count a finished contest; False when its participant count was left out of a full
        histogram (:data:`MAX_HISTOGRAM_KEYS`)."""
        kept = True
        self.contests += 1
        if participants is not None:
            self.participant_samples += 1
            self.participants_sum += participants
            if participants > self.participants_max:
                self.participants_max = participants
            hist = self.hist
            if participants in hist:
                hist[participants] += 1
            elif len(hist) < MAX_HISTOGRAM_KEYS:
                hist[participants] = 1
            else:
                kept = False
            if participants > MULTI_ACTOR_OVER:
                self.multi_actor += 1
        if capacity is not None and capacity > MULTI_ACTOR_OVER:
            self.capacity_over_two += 1
        return kept

    def merge(self, other: WindowAgg) -> None:
        self.arming.merge(other.arming)
        self.resolution.merge(other.resolution)
        self.events += other.events
        self.contests += other.contests
        self.participant_samples += other.participant_samples
        self.participants_sum += other.participants_sum
        self.participants_max = max(self.participants_max, other.participants_max)
        hist = self.hist
        for k, v in other.hist.items():
            if k in hist:
                hist[k] += v
            elif len(hist) < MAX_HISTOGRAM_KEYS:
                hist[k] = v
        self.multi_actor += other.multi_actor
        self.capacity_over_two += other.capacity_over_two
        self.late_events += other.late_events

    # -- state (inside the hub's table value) ---------------------------------------------------
    def to_state(self) -> list[Any]:
        return [
            self.start,
            self.arming.to_dict(),
            self.resolution.to_dict(),
            self.events,
            self.contests,
            self.participant_samples,
            self.participants_sum,
            self.participants_max,
            [[k, v] for k, v in self.hist.items()],
            self.multi_actor,
            self.capacity_over_two,
            self.late_events,
        ]

    @classmethod
    def from_state(cls, data: list[Any]) -> WindowAgg:
        arming = DDSketch.from_dict(data[1])
        out = cls(int(data[0]), arming.alpha, arming.max_buckets)
        out.arming = arming
        out.resolution = DDSketch.from_dict(data[2])
        (
            out.events,
            out.contests,
            out.participant_samples,
            out.participants_sum,
            out.participants_max,
        ) = data[3:8]
        out.hist = {int(k): int(v) for k, v in data[8]}
        out.multi_actor, out.capacity_over_two, out.late_events = data[9:12]
        return out

    # -- the contest.windows payload ------------------------------------------------------------
    def to_result(
        self,
        hub: str,
        size_ms: int,
        *,
        arming_budget_ms: float,
        resolution_budget_ms: float,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        end = self.start + size_ms
        arming = _digest(self.arming, arming_budget_ms)
        resolution = _digest(self.resolution, resolution_budget_ms)
        out: dict[str, Any] = {
            "hubId": hub,
            "windowId": f"{hub}/{self.start}",
            "windowStart": ms_to_iso(self.start),
            "windowEnd": ms_to_iso(end),
            "windowStartMs": self.start,
            "windowEndMs": end,
            "windowSizeMs": size_ms,
            "events": self.events,
            "arming": arming,
            "resolution": resolution,
            "contests": self.contests,
            "participantSamples": self.participant_samples,
            "participantsSum": self.participants_sum,
            "participantsMax": self.participants_max,
            "participantsAverage": (
                self.participants_sum / self.participant_samples if self.participant_samples else None
            ),
            "participantHistogram": {str(k): self.hist[k] for k in sorted(self.hist)},
            "multiActorContests": self.multi_actor,
            "capacityOverTwo": self.capacity_over_two,
            "lateEvents": self.late_events,
            "budgetBreached": {"arming": arming["breached"], "resolution": resolution["breached"]},
        }
        if extra:
            out.update(extra)
        return out

    @classmethod
    def from_result(cls, payload: dict[str, Any]) -> WindowAgg:
        arming = DDSketch.from_dict(payload["arming"]["sketch"])
        out = cls(int(payload["windowStartMs"]), arming.alpha, arming.max_buckets)
        out.arming = arming
        out.resolution = DDSketch.from_dict(payload["resolution"]["sketch"])
        out.events = payload.get("events", 0)
        out.contests = payload["contests"]
        out.participant_samples = payload.get("participantSamples", 0)
        out.participants_sum = payload["participantsSum"]
        out.participants_max = payload["participantsMax"]
        out.hist = {int(k): v for k, v in payload["participantHistogram"].items()}
        out.multi_actor = payload["multiActorContests"]
        out.capacity_over_two = payload["capacityOverTwo"]
        out.late_events = payload["lateEvents"]
        return out


def _digest(sketch: DDSketch, budget_ms: float) -> dict[str, Any]:
    p50, p95, p99 = sketch.quantiles(QUANTILES)
    return {
        "count": sketch.count,
        "p50": p50,
        "p95": p95,
        "p99": p99,
        "min": sketch.min if sketch.count else None,
        "max": sketch.max if sketch.count else None,
        "budgetMs": budget_ms,
        "breached": p95 is not None and p95 > budget_ms,
        "sketch": sketch.to_dict(),
    }
