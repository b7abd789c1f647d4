"""The stream processor's logic, free of Kafka: one call per Kafka record of ``contest.events``.

:meth:`Engine.process` decodes the record (a single event or an envelope), applies its valid
events to the lifecycle join and the window aggregates of their hub, advances the partition's
event-time watermark, closes the windows it passed (for every hub of the partition), expires
stale lifecycles and returns what to send (dead letters, contest records, window results) and
what to write to the state table, in order. The faust agent (``streams/app.py``) sends the
outputs, waits for the window results to be acknowledged, then writes the table values.

Per record, each touched table key is written once: the framework cost is paid per Kafka record,
not per event, and the publisher batches a hub's events into envelopes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson

from contest_telemetry.schema.events import short_type
from sinks.prometheus.counters import CounterSink
from sinks.prometheus.source import HubWindowView, PipelineSnapshot
from streams.counters import NullCounters
from streams.dlq import dlq_headers, dlq_value, encode_dlq
from streams.fastdecode import decode_events
from streams.lifecycle import NO_EFFECT
from streams.settings import WorkerSettings
from streams.state import (
    HubState,
    PartState,
    all_key,
    append_lines,
    closed_key,
    hub_key,
    part_key,
    split_lines,
)
from streams.state import as_bytes as _as_bytes
from streams.windows import WindowAgg, closed_index

__all__ = ["ALL_HUB", "Engine", "Outputs", "Store"]

ALL_HUB = "_all"
_FAILED = "telemetry.contest.workflowFailed"


class Store(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def keys(self) -> Iterable[str]: ...


@dataclass
class Outputs:
    dlq: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    windows: list[tuple[bytes, bytes]] = field(default_factory=list)
    writes: list[tuple[str, bytes]] = field(default_factory=list)
    events: int = 0
    skipped: bool = False
    newest_event_ms: float | None = None


def _contains_window(lines: bytes | None, window_id: str) -> bool:
    return bool(lines) and (b'"windowId":' + orjson.dumps(window_id)) in lines  # type: ignore[operator]


class Engine:
    def __init__(
        self,
        settings: WorkerSettings,
        store: Store,
        counters: CounterSink | None = None,
        source_topic: str = "contest.events",
    ) -> None:
        self.settings = settings
        self.store = store
        self.counters: CounterSink = counters or NullCounters()
        self.source_topic = source_topic
        self.size = settings.window_ms
        self.grace = settings.grace_ms
        self.alpha = settings.alpha
        self.hubs: dict[str, HubState] = {}
        self.parts: dict[int, PartState] = {}
        self.loaded_parts: set[int] = set()
        # Read by snapshot() (possibly from the exporter's thread): values are replaced, never mutated.
        self.recent: dict[str, tuple[int, tuple[WindowAgg, ...]]] = {}
        self.all_recent: dict[int, tuple[WindowAgg, ...]] = {}
        self._view_cache: dict[str, tuple[int, HubWindowView, HubWindowView]] = {}
        self.newest_event_ms: float | None = None

    def _get(self, key: str) -> bytes | None:
        return _as_bytes(self.store.get(key))

    # -- caches --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget decoded state (after a rebalance the table is the truth)."""
        self.hubs = {}
        self.parts = {}
        self.loaded_parts = set()
        self.recent = {}
        self.all_recent = {}
        self._view_cache = {}

    def _recent_from_lines(self, data: bytes | None) -> tuple[WindowAgg, ...]:
        lines = split_lines(data)[-self.settings.rolling_windows :]
        return tuple(WindowAgg.from_result(orjson.loads(line)) for line in lines)

    def _load_hub(self, hub: str) -> HubState | None:
        data = self._get(hub_key(hub))
        if data is None:
            return None
        hs = HubState.from_bytes(data)
        self.hubs[hub] = hs
        closed = self._get(closed_key(hub))
        if closed:
            self.recent[hub] = (hs.part, self._recent_from_lines(closed))
        return hs

    def _hub(self, hub: str, partition: int) -> HubState:
        hs = self.hubs.get(hub)
        if hs is None:
            hs = self._load_hub(hub)
            if hs is None:
                hs = self.hubs[hub] = HubState(hub, partition)
        return hs

    def _part(self, partition: int) -> PartState:
        ps = self.parts.get(partition)
        if ps is None:
            data = self._get(part_key(partition))
            ps = PartState.from_bytes(partition, data) if data else PartState(partition)
            self.parts[partition] = ps
            partials = self._get(all_key(partition))
            if partials:
                self.all_recent[partition] = self._recent_from_lines(partials)
        return ps

    def applied(self, partition: int) -> int:
        """The last source offset of ``partition`` the state contains (-1: none yet)."""
        return self._part(partition).applied

    def peek_applied(self, partition: int) -> int:
        """:meth:`applied` without loading the partition into the caches (for readers outside the
        agent, e.g. the watchdog: a read during recovery must not leave a stale cached state)."""
        cached = self.parts.get(partition)
        if cached is not None:
            return cached.applied
        data = self._get(part_key(partition))
        return PartState.from_bytes(partition, data).applied if data else -1

    def _hubs_of(self, partition: int) -> Iterator[HubState]:
        if partition not in self.loaded_parts:
            for key in list(self.store.keys()):
                if isinstance(key, str) and key.startswith("h:") and key[2:] not in self.hubs:
                    self._load_hub(key[2:])
            self.loaded_parts.add(partition)
        return (hs for hs in list(self.hubs.values()) if hs.part == partition)

    # -- one Kafka record ----------------------------------------------------------------------
    def process(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: float | None = None,
        topic: str | None = None,
    ) -> Outputs:
        out = Outputs()
        part = self._part(partition)
        fresh = offset > part.applied
        decoded = decode_events(value)
        if fresh and decoded.invalid:
            reasons: dict[str, int] = {}
            for invalid in decoded.invalid:
                dv = dlq_value(
                    invalid,
                    topic=topic or self.source_topic,
                    partition=partition,
                    offset=offset,
                    key=key,
                    original=value,
                    envelope=decoded.envelope,
                )
                reasons[dv["reason"]] = reasons.get(dv["reason"], 0) + 1
                out.dlq.append((key, encode_dlq(dv), dlq_headers(dv)))
            for reason, n in reasons.items():
                self.counters.invalid(reason, n)
        if not decoded.events and not fresh:
            out.skipped = True
            return out
        k_prev, wm_prev = part.closed_k, part.watermark
        groups: dict[str, tuple[list[dict[str, Any]], list[float]]] = {}
        fallback = float(timestamp_ms) if timestamp_ms is not None else 0.0
        times = cast(list[float], decoded.times)
        if None in times:
            times = [fallback if t is None else t for t in times]
        max_t: float | None = max(times) if times else None
        events = decoded.events
        if events and all(ev["hubId"] == events[0]["hubId"] for ev in events):
            groups[events[0]["hubId"]] = (events, times)  # one hub (an envelope)
        else:
            for ev, t in zip(events, times, strict=True):
                hub_id = ev["hubId"]
                group = groups.get(hub_id)
                if group is None:
                    groups[hub_id] = ([ev], [t])
                else:
                    group[0].append(ev)
                    group[1].append(t)
        dirty: dict[str, HubState] = {}
        for hub, (events, times) in groups.items():
            hs = self._hub(hub, partition)
            if offset <= hs.applied.get(partition, -1):
                continue
            self._apply(hs, events, times, partition, offset, k_prev, wm_prev, out)
            dirty[hub] = hs
        if decoded.publisher_dropped and fresh and groups:
            self.counters.publisher_dropped(next(iter(groups)), decoded.publisher_dropped)
        closed_writes: list[tuple[str, bytes]] = []
        if fresh:
            if max_t is not None and (part.watermark is None or max_t > part.watermark):
                part.watermark = max_t
            part.applied = offset
            k_new = closed_index(part.watermark, self.size, self.grace)
            if k_new is not None and (k_prev is None or k_new > k_prev):
                closed_writes = self._sweep(part, k_prev, k_new, out, dirty)
                part.closed_k = k_new
        else:
            out.skipped = not dirty
        if max_t is not None:
            out.newest_event_ms = max_t
            if self.newest_event_ms is None or max_t > self.newest_event_ms:
                self.newest_event_ms = max_t
        # Order matters (see streams/state.py): retained windows, hubs, _all partials, partition.
        out.writes.extend(w for w in closed_writes if w[0].startswith("c:"))
        out.writes.extend((hub_key(h), hs.to_bytes()) for h, hs in dirty.items())
        out.writes.extend(w for w in closed_writes if w[0].startswith("a:"))
        if fresh:
            out.writes.append((part_key(partition), part.to_bytes()))
        return out

    def _apply(
        self,
        hs: HubState,
        events: list[dict[str, Any]],
        times: list[float],
        partition: int,
        offset: int,
        k_prev: int | None,
        wm_prev: float | None,
        out: Outputs,
    ) -> None:
        hub, size, alpha, open_ = hs.hub, self.size, self.alpha, hs.open
        apply = hs.lifecycle.apply
        late = 0
        arming: list[float] = []
        resolution: list[float] = []
        types: dict[str, int] = {}
        multi = cap = failed = 0
        floor = math.floor
        records = out.records
        hub_bytes = hub.encode()
        dumps = orjson.dumps
        no_effect = NO_EFFECT
        # Events of one record are mostly in one window: keep the last one at hand.
        last_idx: int | None = None
        agg: WindowAgg | None = None
        for ev, t in zip(events, times, strict=True):
            msg = ev["message"]
            types[msg] = types.get(msg, 0) + 1
            eff = apply(hub, ev, t)
            idx = floor(t / size)
            if k_prev is not None and idx < k_prev:
                late += 1  # counted and recorded below, kept out of every window
                target = None
            else:
                if idx != last_idx:
                    agg = open_.get(idx)
                    if agg is None:
                        agg = open_[idx] = WindowAgg(idx * size, alpha)
                    last_idx = idx
                assert agg is not None
                agg.events += 1
                target = agg
            if eff is no_effect:
                continue
            if eff.arming is not None:
                arming.append(eff.arming)
                if target is not None:
                    target.arming.add(eff.arming)
            if eff.resolution is not None:
                resolution.append(eff.resolution)
                if target is not None:
                    target.resolution.add(eff.resolution)
            if eff.finished:
                if msg == _FAILED:
                    failed += 1
                if eff.participants is not None and eff.participants > 2:
                    multi += 1
                if eff.capacity is not None and eff.capacity > 2:
                    cap += 1
                if target is not None:
                    target.add_contest(eff.participants, eff.capacity)
            if eff.record is not None:
                records.append((hub_bytes, dumps(eff.record)))
        if late:
            assert wm_prev is not None
            hs.late += late
            idx = floor(wm_prev / size)
            agg = open_.get(idx)
            if agg is None:
                agg = open_[idx] = WindowAgg(idx * size, alpha)
            agg.late_events += late
            self.counters.late(hub, late)
        hs.applied[partition] = offset
        hs.part = partition
        out.events += len(events)
        c = self.counters
        for msg, n in types.items():
            c.events(hub, short_type(msg), n)
        if arming:
            c.observe_arming_ms(hub, arming)
        if resolution:
            c.observe_resolution_ms(hub, resolution)
        if failed:
            c.workflow_failures(hub, failed)
        if multi:
            c.multi_actor(hub, multi)
        if cap:
            c.capacity_over_two(hub, cap)
        c.processed(len(events))

    def _result(self, hub: str, agg: WindowAgg, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.settings
        return agg.to_result(
            hub,
            self.size,
            arming_budget_ms=s.arming_budget_ms,
            resolution_budget_ms=s.resolution_budget_ms,
            extra=extra,
        )

    def _sweep(
        self,
        part: PartState,
        k_prev: int | None,
        k_new: int,
        out: Outputs,
        dirty: dict[str, HubState],
    ) -> list[tuple[str, bytes]]:
        """Close every window of the partition's hubs below ``k_new``; expire stale lifecycles."""
        partition = part.partition
        keep = self.settings.retained_windows
        rolling = self.settings.rolling_windows
        assert part.watermark is not None
        ttl_before = part.watermark - self.settings.ttl_ms
        partials: dict[int, WindowAgg] = {}
        writes: list[tuple[str, bytes]] = []
        ttl_count = 0

        def partial(start: int) -> WindowAgg:
            agg = partials.get(start)
            if agg is None:
                agg = partials[start] = WindowAgg(start, self.alpha)
            return agg

        for hs in self._hubs_of(partition):
            hub = hs.hub
            changed = False
            closing = sorted(idx for idx in hs.open if idx < k_new)
            just_closed: set[int] = set()
            lines: list[bytes] = []
            existing = self._get(closed_key(hub))
            if hs.closed_k is not None and (k_prev is None or hs.closed_k > k_prev) and existing:
                # This hub's closing reached the changelog but the partition's did not (a crash):
                # its results for the windows being closed now come from its retained windows.
                for line in split_lines(existing):
                    payload = orjson.loads(line)
                    idx = payload["windowStartMs"] // self.size
                    if (k_prev is None or idx >= k_prev) and idx < k_new:
                        partial(payload["windowStartMs"]).merge(WindowAgg.from_result(payload))
            for idx in closing:
                agg = hs.open.pop(idx)
                payload = self._result(hub, agg)
                data = orjson.dumps(payload)
                out.windows.append((hub.encode(), data))
                just_closed.add(idx)
                if not _contains_window(existing, payload["windowId"]):
                    lines.append(data)
                partial(agg.start).merge(agg)
            if closing:
                hs.closed_k = k_new
                new = append_lines(existing, lines, keep) if lines else existing
                if new is not None:
                    writes.append((closed_key(hub), new))
                    self.recent[hub] = (partition, self._recent_from_lines(new)[-rolling:])
                changed = True
            expired = hs.lifecycle.expire(hub, ttl_before)
            if expired:
                ttl_count += len(expired)
                out.records.extend((hub.encode(), orjson.dumps(r)) for r in expired)
                changed = True
            if changed:
                dirty[hub] = hs
        if ttl_count:
            self.counters.expired_lifecycles(ttl_count)
        if partials:
            existing = self._get(all_key(partition))
            lines = []
            recent = list(self.all_recent.get(partition, ()))
            for start in sorted(partials):
                agg = partials[start]
                window_id = f"{ALL_HUB}/{partition}/{start}"
                payload = self._result(
                    ALL_HUB,
                    agg,
                    {"windowId": window_id, "scope": "partition", "partition": partition},
                )
                data = orjson.dumps(payload)
                out.windows.append((ALL_HUB.encode(), data))
                if not _contains_window(existing, window_id):
                    lines.append(data)
                recent.append(agg)
            if lines:
                writes.append((all_key(partition), append_lines(existing, lines, keep)))
            self.all_recent[partition] = tuple(recent[-rolling:])
        return writes

    # -- the exporter's view -------------------------------------------------------------------
    def _view(self, hub: str, aggs: tuple[WindowAgg, ...]) -> tuple[HubWindowView, HubWindowView]:
        cached = self._view_cache.get(hub)
        if cached is not None and cached[0] == id(aggs):
            return cached[1], cached[2]
        last = self._as_view(hub, [aggs[-1]])
        rolling = self._as_view(hub, list(aggs[-self.settings.rolling_windows :]))
        self._view_cache[hub] = (id(aggs), last, rolling)
        return last, rolling

    def _as_view(self, hub: str, aggs: list[WindowAgg]) -> HubWindowView:
        merged = WindowAgg(min(a.start for a in aggs), self.alpha)
        for a in aggs:
            merged.merge(a)
        return HubWindowView(
            hub=hub,
            arming=merged.arming,
            resolution=merged.resolution,
            contests=merged.contests,
            participants_sum=merged.participants_sum,
            participants_max=merged.participants_max,
            multi_actor=merged.multi_actor,
            capacity_over_two=merged.capacity_over_two,
            window_start_ms=merged.start,
            window_end_ms=max(a.start for a in aggs) + self.size,
        )

    def snapshot(self, assigned: set[int] | None = None) -> PipelineSnapshot:
        """Views of the last closed window and the rolling merge, per hub this worker owns and
        ``_all`` (merged over the partitions it owns). Safe to call from another thread."""
        last: dict[str, HubWindowView] = {}
        rolling: dict[str, HubWindowView] = {}
        for hub, (partition, aggs) in list(self.recent.items()):
            if aggs and (assigned is None or partition in assigned):
                last[hub], rolling[hub] = self._view(hub, aggs)
        by_start: dict[int, list[WindowAgg]] = {}
        for partition, aggs in list(self.all_recent.items()):
            if assigned is None or partition in assigned:
                for agg in aggs:
                    by_start.setdefault(agg.start, []).append(agg)
        if by_start:
            starts = sorted(by_start)
            last[ALL_HUB] = self._as_view(ALL_HUB, by_start[starts[-1]])
            recent = [a for s in starts[-self.settings.rolling_windows :] for a in by_start[s]]
            rolling[ALL_HUB] = self._as_view(ALL_HUB, recent)
        marks = [
            p.watermark
            for n, p in list(self.parts.items())
            if p.watermark is not None and (assigned is None or n in assigned)
        ]
        return PipelineSnapshot(
            last=last,
            rolling=rolling,
            watermark_ms=min(marks) if marks else None,
            newest_event_time_ms=self.newest_event_ms,
        )
