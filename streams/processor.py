"""The stream processor's logic, free of Kafka: one call per Kafka record the worker reads.

A record is an ingested batch (:mod:`streams.ingested`: validated events of one hub, packed by the
ingest stage) or, on the reference path (``CT_WORKER_SOURCE=events``), a record of
``contest.events`` itself (a single event or an envelope, decoded and validated here).
:meth:`Engine.process` applies the events to the lifecycle join and the window aggregates of
their hub, advances the partition's event-time watermark, closes the windows it passed (for every
hub of the partition), expires stale lifecycles and returns what to send (dead letters, contest
records, window results) and what to write to the state table, in order (see streams/state.py for
the layout and why that order survives a crash). The faust agent (``streams/app.py``) sends the
outputs, waits for the window results to be acknowledged, then writes the table values.

Per record, each touched table key is written once, and only the keys the record touched: the
framework cost is paid per Kafka record, not per event, and state bytes per event do not grow
with the number of open contests.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import orjson

from contest_telemetry.schema import WORKFLOW_FAILED, InvalidEvent, short_type
from contest_telemetry.schema.contract import MULTI_ACTOR_OVER
from streams.counters import CounterSink
from streams.dlq import MAX_DLQ_BYTES, cut_dlq, dlq_headers, dlq_value
from streams.exceptions import ProcessingError, StateError
from streams.fastdecode import decode_events, screen_event_times
from streams.ingested import INGESTED_MESSAGE, parse_ingested
from streams.lifecycle import NO_EFFECT, dropped_record
from streams.settings import EventTimeSettings, WorkerSettings
from streams.snapshot import HubWindowView, PipelineSnapshot
from streams.state import (
    HubState,
    PartState,
    all_key,
    append_lines,
    closed_key,
    encode_entry,
    encode_window,
    entry_key,
    hub_key,
    load_hubs,
    part_key,
    split_lines,
    window_key,
)
from streams.state import as_bytes as _as_bytes
from streams.windows import WindowAgg, closed_index

__all__ = ["ALL_HUB", "Engine", "Outputs", "Store"]

log = logging.getLogger(__name__)

ALL_HUB = "_all"
_INGESTED_PREFIX = b'{"message":"' + INGESTED_MESSAGE.encode() + b'"'

# One hub's events of one record: (source partition, events, event times, source offsets).
_Group = tuple[int, list[dict[str, Any]], list[float], list[int]]


class Store(Protocol):
    def get(self, key: str) -> Any: ...
    def keys(self) -> Iterable[str]: ...
    def items(self) -> Iterable[tuple[str, Any]]: ...


@dataclass
class Outputs:
    dlq: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)
    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    windows: list[tuple[bytes, bytes]] = field(default_factory=list)
    writes: list[tuple[str, bytes | None]] = field(default_factory=list)  # None: delete the key
    # The changelog partition of each write (the input partition its hub or partition key is on).
    write_partitions: list[int] = field(default_factory=list)
    events: int = 0
    skipped: bool = False
    newest_event_ms: float | None = None
    # Staged mode only: processing the record failed and the caches (with every record staged
    # since the last flush) were dropped; read again from ``applied + 1``, this record included.
    rewound: bool = False


def _contains_window(lines: bytes | None, window_id: str) -> bool:
    return bool(lines) and (b'"windowId":' + orjson.dumps(window_id)) in lines  # type: ignore[operator]


class _Touched:
    """What one record changed for one hub: window indexes, and keys to delete at once."""

    __slots__ = ("deletes", "windows")

    def __init__(self) -> None:
        self.windows: set[int] = set()
        self.deletes: list[str] = []


class Engine:
    def __init__(
        self,
        settings: WorkerSettings,
        store: Store,
        counters: CounterSink | None = None,
        source_topic: str = "contest.events",
        event_time: EventTimeSettings | None = None,
        *,
        stage: bool = False,
        dlq_max_bytes: int = MAX_DLQ_BYTES,
    ) -> None:
        self.settings = settings
        self.dlq_max_bytes = dlq_max_bytes  # CT_TOPIC_DLQ_MAX_BYTES: larger payloads are cut
        # Staged: a record's table writes wait for :meth:`flush`, which writes each key touched
        # since the last flush once (see "Staged writes" in streams/state.py). Otherwise every
        # record's ``Outputs.writes`` carries its own writes (the reference, and the off switch).
        self.stage = stage
        # Checked where this engine validates events itself (records of contest.events).
        self.event_time = (event_time or EventTimeSettings()).window_ms()
        self.store = store
        self.counters: CounterSink = counters or CounterSink()
        self.source_topic = source_topic
        self.size = settings.window_ms
        self.grace = settings.grace_ms
        self.alpha = settings.alpha
        self.max_buckets = settings.sketch_max_buckets
        self.max_open = settings.max_open_contests
        self.max_value = settings.max_state_value_bytes
        self.idle_windows = settings.idle_hub_windows or settings.retained_windows
        self.hubs: dict[str, HubState] = {}
        self.parts: dict[int, PartState] = {}
        self.loaded = False
        # Read by snapshot() (possibly from the exporter's thread): values are replaced, never mutated.
        self.recent: dict[str, tuple[int | None, tuple[WindowAgg, ...]]] = {}
        self.all_recent: dict[int, tuple[WindowAgg, ...]] = {}
        self._view_cache: dict[str, tuple[int, HubWindowView, HubWindowView]] = {}
        self.newest_event_ms: float | None = None
        self._reset_staged()
        # Records (partition, offset) whose processing failed once in staged mode: dead-lettered
        # when they come again (after the re-read a rewind asks for). Bounded by the failures
        # between two flushes: a rewind drops every staged record.
        self._poison: set[tuple[int, int]] = set()

    def _reset_staged(self) -> None:
        # What the records since the last flush changed, written by flush(): the hubs and what
        # they touched, closed windows (c:, a:) and evicted keys (None), last operation wins,
        # and the partitions whose p: moved.
        self._dirty: dict[str, HubState] = {}
        self._touched: dict[str, _Touched] = {}
        self._staged: dict[str, tuple[bytes | None, int]] = {}
        self._dirty_parts: set[int] = set()
        self.staged_events = 0

    def _get(self, key: str) -> bytes | None:
        staged = self._staged.get(key)
        if staged is not None:
            return staged[0]
        return _as_bytes(self.store.get(key))

    def _agg(self, start: int) -> WindowAgg:
        return WindowAgg(start, self.alpha, self.max_buckets)

    # -- caches --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget decoded state (after a rebalance the table is the truth)."""
        self.hubs = {}
        self.parts = {}
        self.loaded = False
        self.recent = {}
        self.all_recent = {}
        self._view_cache = {}
        self._reset_staged()

    def _recent_from_lines(self, data: bytes | None) -> tuple[WindowAgg, ...]:
        lines = split_lines(data)[-self.settings.rolling_windows :]
        return tuple(WindowAgg.from_result(orjson.loads(line)) for line in lines)

    def _load(self) -> None:
        """Decode every hub of the table once (after a start or a rebalance): one pass over the
        keys, so a hub's entries and windows never need a lookup per key."""
        self.hubs = load_hubs(list(self.store.items()), self.max_open)
        for hub, hs in self.hubs.items():
            closed = self._get(closed_key(hub))
            if closed:
                self.recent[hub] = (hs.part, self._recent_from_lines(closed))
        self.loaded = True

    def _hub(self, hub: str, partition: int) -> HubState:
        hs = self.hubs.get(hub)
        if hs is None:
            hs = self.hubs[hub] = HubState(hub, partition, self.max_open)
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

    def _hubs_of(self, partition: int) -> list[HubState]:
        return [hs for hs in self.hubs.values() if hs.part == partition]

    # -- one Kafka record ----------------------------------------------------------------------
    def _dead_letter(
        self,
        out: Outputs,
        invalid: list[InvalidEvent],
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        envelope: bool,
    ) -> None:
        reasons: dict[str, int] = {}
        for bad in invalid:
            dv = dlq_value(
                bad,
                topic=topic,
                partition=partition,
                offset=offset,
                key=key,
                original=value,
                envelope=envelope,
            )
            reasons[dv["reason"]] = reasons.get(dv["reason"], 0) + 1
            data, cut = cut_dlq(dv, self.dlq_max_bytes)
            out.dlq.append((key, data, dlq_headers(dv, cut=cut)))
            if cut:
                self.counters.dlq_truncated()
        for reason, n in reasons.items():
            self.counters.invalid(reason, n)

    def _decode(
        self,
        out: Outputs,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: float | None,
        topic: str,
        fresh: bool,
    ) -> tuple[list[tuple[str, _Group]], float | None]:
        """The record's events grouped by hub (an ingested record: by batch, a hub's in source
        order), and the event time it moves the watermark to (an ingested record: its ``wm``, see
        streams/ingested.py); its dead letters and counts when fresh."""
        if value is not None and value.startswith(_INGESTED_PREFIX):
            try:
                batches = parse_ingested(orjson.loads(value))
            except (orjson.JSONDecodeError, ValueError) as exc:
                if fresh:
                    bad = InvalidEvent(ProcessingError(f"malformed ingested record: {exc}"))
                    self._dead_letter(
                        out,
                        [bad],
                        topic=topic,
                        partition=partition,
                        offset=offset,
                        key=key,
                        value=value,
                        envelope=False,
                    )
                return [], None
            assert batches is not None
            ingested: list[tuple[str, _Group]] = []
            for batch in batches:
                if fresh:
                    for reason, n in batch.dead_letters.items():
                        self.counters.invalid(reason, n)
                    if batch.publisher_dropped:
                        self.counters.publisher_dropped(batch.hub, batch.publisher_dropped)
                if batch.events:
                    ingested.append((batch.hub, (batch.partition, batch.events, batch.times, batch.offsets)))
            return ingested, batches[-1].wm
        groups: dict[str, _Group] = {}
        decoded = decode_events(value)
        screen_event_times(decoded, timestamp_ms, *self.event_time)
        if fresh and decoded.invalid:
            self._dead_letter(
                out,
                decoded.invalid,
                topic=topic,
                partition=partition,
                offset=offset,
                key=key,
                value=value,
                envelope=decoded.envelope,
            )
        fallback = float(timestamp_ms) if timestamp_ms is not None else 0.0
        times = cast(list[float], decoded.times)
        if None in times:
            times = [fallback if t is None else t for t in times]
        events = decoded.events
        if events and all(ev["hubId"] == events[0]["hubId"] for ev in events):
            groups[events[0]["hubId"]] = (partition, events, times, [offset] * len(events))  # an envelope
        else:
            for ev, t in zip(events, times, strict=True):
                group = groups.get(ev["hubId"])
                if group is None:
                    groups[ev["hubId"]] = (partition, [ev], [t], [offset])
                else:
                    group[1].append(ev)
                    group[2].append(t)
                    group[3].append(offset)
        if decoded.publisher_dropped and fresh and groups:
            self.counters.publisher_dropped(next(iter(groups)), decoded.publisher_dropped)
        t_max = max((t for g in groups.values() for t in g[2]), default=None)
        return list(groups.items()), t_max

    def process(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: float | None = None,
        topic: str | None = None,
    ) -> Outputs:
        """What one record changes (see the module docstring). Never raises for what a record
        holds: an unexpected exception dead-letters the record (reason ``processing``, the
        exception's text), the caches are dropped (the table, not yet written, is the truth) and
        the partition moves past the record. Undecodable *state* (:class:`StateError`) raises."""
        try:
            return self._process(partition, offset, key, value, timestamp_ms, topic)
        except StateError:
            raise
        except Exception as exc:
            log.error(
                "%s[%d]@%d: processing failed, record dead-lettered: %r",
                topic or self.source_topic,
                partition,
                offset,
                exc,
            )
            self.reset()
            out = Outputs()
            part = self._part(partition)
            if offset <= part.applied:
                out.skipped = True
                return out
            if self.stage:
                # The records staged since the last flush went with the caches: they are read
                # again before this one, which is then dead-lettered (below).
                if len(self._poison) >= 1000:
                    self._poison.pop()  # kept bounded: a record dropped here just fails once more
                self._poison.add((partition, offset))
                out.rewound = True
                return out
            self._poison_record(out, exc, partition, offset, key, value, topic)
            self._flush_into(out)
            return out

    def _poison_record(
        self,
        out: Outputs,
        exc: BaseException,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        topic: str | None,
    ) -> None:
        """Dead-letter a record whose processing raised, and move the partition past it."""
        bad = InvalidEvent(ProcessingError(f"{type(exc).__name__}: {exc}"[:2000]))
        self._dead_letter(
            out,
            [bad],
            topic=topic or self.source_topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            envelope=False,
        )
        self._part(partition).applied = offset
        self._dirty_parts.add(partition)

    def _process(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: float | None,
        topic: str | None,
    ) -> Outputs:
        out = Outputs()
        if not self.loaded:
            self._load()
        part = self._part(partition)
        fresh = offset > part.applied
        if self._poison and (partition, offset) in self._poison:
            self._poison.discard((partition, offset))
            if fresh:
                failed = ProcessingError("processing this record failed; dead-lettered after a re-read")
                self._poison_record(out, failed, partition, offset, key, value, topic)
                if not self.stage:
                    self._flush_into(out)
                return out
        groups, max_t = self._decode(
            out, partition, offset, key, value, timestamp_ms, topic or self.source_topic, fresh
        )
        if not groups and not fresh:
            out.skipped = True
            return out
        k_prev, wm_prev = part.closed_k, part.watermark
        dirty, touched = self._dirty, self._touched
        applied_any = False
        for hub, (source, events, times, offsets) in groups:
            hs = self._hub(hub, partition)
            done = hs.applied.get(source, -1)
            if offsets[-1] <= done:
                continue
            tch = touched.get(hub)
            if tch is None:
                tch = touched[hub] = _Touched()
            self._apply(hs, source, done, events, times, offsets, partition, k_prev, wm_prev, out, tch)
            dirty[hub] = hs
            applied_any = True
        if fresh:
            if max_t is not None and (part.watermark is None or max_t > part.watermark):
                part.watermark = max_t
            part.applied = offset
            k_new = closed_index(part.watermark, self.size, self.grace)
            if k_new is not None and (k_prev is None or k_new > k_prev):
                staged = self._staged
                closed_writes, evictions = self._sweep(part, k_prev, k_new, out, dirty, touched)
                for k, v in closed_writes:
                    staged[k] = (v, partition)
                for k, _ in evictions:
                    staged[k] = (None, partition)
                part.closed_k = k_new
            self._dirty_parts.add(partition)
        else:
            out.skipped = not applied_any
        newest = max((max(g[2]) for _, g in groups), default=None)
        if newest is not None:
            out.newest_event_ms = newest
            if self.newest_event_ms is None or newest > self.newest_event_ms:
                self.newest_event_ms = newest
        self.staged_events += out.events
        if not self.stage:
            self._flush_into(out)
        return out

    def flush(self) -> Outputs:
        """Staged mode: the table writes of every record since the last flush, each touched key
        once, in the crash-safe order (and the contest records of entries too large to keep)."""
        out = Outputs()
        self._flush_into(out)
        return out

    def _flush_into(self, out: Outputs) -> None:
        # Order matters (see streams/state.py).
        writes, parts = out.writes, out.write_partitions
        dirty, staged = self._dirty, self._staged
        for hs in dirty.values():
            for k in hs.pend:
                writes.append((k, None))
                parts.append(cast(int, hs.part))  # set by every record that made it dirty
            hs.pend = []
        for k, (v, p) in staged.items():
            if v is not None and k[0] == "c":
                writes.append((k, v))
                parts.append(p)
        touched = self._touched
        written: set[str] = set()
        for hub, hs in dirty.items():
            n = len(writes)
            self._hub_writes(hs, touched.get(hub) or _Touched(), writes, out)
            parts.extend([cast(int, hs.part)] * (len(writes) - n))
            if staged:
                written.update(k for k, _ in writes[n:])
        for k, (v, p) in staged.items():
            # A hub evicted and back within one flush: its new keys supersede the deletions.
            if v is None and k not in written:
                writes.append((k, None))
                parts.append(p)
        for k, (v, p) in staged.items():
            if v is not None and k[0] == "a":
                writes.append((k, v))
                parts.append(p)
        for partition in sorted(self._dirty_parts):
            writes.append((part_key(partition), self.parts[partition].to_bytes()))
            parts.append(partition)
        if writes:
            self.counters.state_writes(len(writes), sum(len(v) for _, v in writes if v is not None))
        self._reset_staged()

    def _hub_writes(
        self, hs: HubState, tch: _Touched, writes: list[tuple[str, bytes | None]], out: Outputs
    ) -> None:
        """The hub's touched windows and entries, its immediate deletions, then its ``h:``."""
        hub = hs.hub
        for idx in sorted(tch.windows):
            agg = hs.open.get(idx)
            if agg is not None:
                writes.append((window_key(hub, idx), encode_window(hub, idx, agg, hs.wapplied.get(idx, {}))))
                hs.wstored.add(idx)
        lc = hs.lifecycle
        oversize: list[tuple[str, dict[str, Any]]] = []
        for ident in lc.touched:
            entry = lc.get(ident)
            if entry is not None:
                data = encode_entry(hub, ident, entry)
                if len(data) > self.max_value:
                    oversize.append((ident, entry))
                    continue
                writes.append((entry_key(hub, ident), data))
                hs.stored.add(ident)
            elif ident in hs.stored:
                hs.stored.discard(ident)
                hs.pend_new.append(entry_key(hub, ident))
        lc.touched.clear()
        for ident, entry in oversize:
            # One entry larger than a state value may be (huge tags or labels): expire it.
            (lc.armed if ident[0] == "a" else lc.contests).pop(ident[2:], None)
            out.records.append((hub.encode(), orjson.dumps(dropped_record(hub, entry, "oversize"))))
            self.counters.state_bound("value_size")
            log.warning(
                "hub %r: lifecycle entry over %d bytes expired (lifecycle 'oversize')", hub, self.max_value
            )
            if ident in hs.stored:
                hs.stored.discard(ident)
                tch.deletes.append(entry_key(hub, ident))
        writes.extend((k, None) for k in tch.deletes)
        meta = hs.meta_bytes()
        if len(meta) > self.max_value:
            # Only a huge list of deletions can make it so: issue them now (losing the crash
            # ordering for these keys: a crash could then count their last record's events again).
            writes.extend((k, None) for k in hs.pend_new)
            hs.pend_new = []
            meta = hs.meta_bytes()
            self.counters.state_bound("value_size")
        writes.append((hub_key(hub), meta))
        hs.pend, hs.pend_new = hs.pend + hs.pend_new, []

    def _apply(
        self,
        hs: HubState,
        source: int,
        done: int,
        events: list[dict[str, Any]],
        times: list[float],
        offsets: list[int],
        partition: int,
        k_prev: int | None,
        wm_prev: float | None,
        out: Outputs,
        tch: _Touched,
    ) -> None:
        hub, size, open_ = hs.hub, self.size, hs.open
        lifecycle = hs.lifecycle
        apply = lifecycle.apply
        wapplied = hs.wapplied
        late = late_windowed = 0
        arming: list[float] = []
        resolution: list[float] = []
        types: dict[str, int] = {}
        multi = cap = failed = folded = applied_n = 0
        floor = math.floor
        records = out.records
        hub_bytes = hub.encode()
        dumps = orjson.dumps
        no_effect = NO_EFFECT
        before: dict[int, int] = {}  # window index -> its applied offset of `source` before this record
        late_idx = floor(wm_prev / size) if wm_prev is not None else None
        last_t = hs.last_t
        # Events of one record are mostly in one window: keep the last one at hand.
        last_idx: int | None = None
        agg: WindowAgg | None = None
        last_before = -1
        for ev, t, s in zip(events, times, offsets, strict=True):
            if s <= done:
                continue
            applied_n += 1
            msg = ev["message"]
            types[msg] = types.get(msg, 0) + 1
            eff = apply(hub, ev, t)
            if last_t is None or t > last_t:
                last_t = t
            idx = floor(t / size)
            target: WindowAgg | None
            if k_prev is not None and idx < k_prev:
                late += 1  # counted and recorded below, kept out of every window
                assert late_idx is not None
                if s > before.setdefault(late_idx, wapplied.get(late_idx, {}).get(source, -1)):
                    late_windowed += 1
                target = None
            else:
                if idx != last_idx:
                    agg = open_.get(idx)
                    if agg is None:
                        agg = open_[idx] = self._agg(idx * size)
                    last_before = before.setdefault(idx, wapplied.get(idx, {}).get(source, -1))
                    last_idx = idx
                assert agg is not None
                if s > last_before:
                    agg.events += 1
                    target = agg
                else:
                    target = None  # this window already counted the event before a crash
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
                if msg == WORKFLOW_FAILED:
                    failed += 1
                if eff.participants is not None and eff.participants > MULTI_ACTOR_OVER:
                    multi += 1
                if eff.capacity is not None and eff.capacity > MULTI_ACTOR_OVER:
                    cap += 1
                if target is not None and not target.add_contest(eff.participants, eff.capacity):
                    folded += 1
            if eff.record is not None:
                records.append((hub_bytes, dumps(eff.record)))
        if late:
            hs.late += late
            self.counters.late(hub, late)
        if late_windowed:
            assert late_idx is not None
            agg = open_.get(late_idx)
            if agg is None:
                agg = open_[late_idx] = self._agg(late_idx * size)
            agg.late_events += late_windowed
        last = offsets[-1]
        for idx, prior in before.items():
            # Never back: replaying a flush's records on a window that holds all of them.
            wapplied.setdefault(idx, {})[source] = prior if prior > last else last
        tch.windows.update(before)
        if lifecycle.evicted:
            for ident, entry in lifecycle.evicted:
                records.append((hub_bytes, dumps(dropped_record(hub, entry, "overflow"))))
                if ident in hs.stored:
                    hs.stored.discard(ident)
                    tch.deletes.append(entry_key(hub, ident))
            self.counters.state_bound("open_contests", len(lifecycle.evicted))
            lifecycle.evicted.clear()
        hs.applied[source] = offsets[-1]
        hs.part = partition
        hs.last_t = last_t
        out.events += applied_n
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
        if folded:
            c.state_bound("participant_histogram", folded)
        c.processed(applied_n)

    def _result(self, hub: str, agg: WindowAgg, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.settings
        return agg.to_result(
            hub,
            self.size,
            arming_budget_ms=s.arming_budget_ms,
            resolution_budget_ms=s.resolution_budget_ms,
            extra=extra,
        )

    def _retained(self, existing: bytes | None, lines: list[bytes]) -> bytes:
        """The retained windows with ``lines`` appended, cut to fit one state value."""
        keep = self.settings.retained_windows
        new = append_lines(existing, lines, keep)
        while len(new) > self.max_value and keep > 1:
            keep -= 1
            new = append_lines(new, [], keep)
            self.counters.state_bound("value_size")
        return new

    def _sweep(
        self,
        part: PartState,
        k_prev: int | None,
        k_new: int,
        out: Outputs,
        dirty: dict[str, HubState],
        touched: dict[str, _Touched],
    ) -> tuple[list[tuple[str, bytes | None]], list[tuple[str, bytes | None]]]:
        """Close every window of the partition's hubs below ``k_new``; expire stale lifecycles;
        evict idle hubs. Returns the closed-window writes and the evictions."""
        partition = part.partition
        rolling = self.settings.rolling_windows
        assert part.watermark is not None
        ttl_before = part.watermark - self.settings.ttl_ms
        idle_before = part.watermark - self.idle_windows * self.size
        partials: dict[int, WindowAgg] = {}
        writes: list[tuple[str, bytes | None]] = []
        evictions: list[tuple[str, bytes | None]] = []
        ttl_count = collapsed = 0

        def partial(start: int) -> WindowAgg:
            agg = partials.get(start)
            if agg is None:
                agg = partials[start] = self._agg(start)
            return agg

        for hs in self._hubs_of(partition):
            hub = hs.hub
            changed = False
            closing = sorted(idx for idx in hs.open if idx < k_new)
            lines: list[bytes] = []
            appended: list[WindowAgg] = []  # the windows of ``lines``
            existing = self._get(closed_key(hub))
            recovered = hs.closed_k is not None and (k_prev is None or hs.closed_k > k_prev) and existing
            if recovered:
                # This hub's closing reached the changelog but the partition's did not (a crash):
                # its results for the windows being closed now come from its retained windows.
                for line in split_lines(existing):
                    payload = orjson.loads(line)
                    idx = payload["windowStartMs"] // self.size
                    if (k_prev is None or idx >= k_prev) and idx < k_new:
                        partial(payload["windowStartMs"]).merge(WindowAgg.from_result(payload))
            for idx in closing:
                agg = hs.open.pop(idx)
                hs.wapplied.pop(idx, None)
                if idx in hs.wstored:
                    hs.wstored.discard(idx)
                    hs.pend_new.append(window_key(hub, idx))
                collapsed += agg.arming.collapsed + agg.resolution.collapsed
                payload = self._result(hub, agg)
                data = orjson.dumps(payload)
                out.windows.append((hub.encode(), data))
                if not _contains_window(existing, payload["windowId"]):
                    lines.append(data)
                    appended.append(agg)
                partial(agg.start).merge(agg)
            if closing:
                hs.closed_k = k_new
                new = self._retained(existing, lines) if lines else existing
                if new is not None:
                    writes.append((closed_key(hub), new))
                    prior = self.recent.get(hub)
                    if not recovered and (prior is not None or existing is None):
                        # What the retained lines say, without decoding them again: the windows
                        # before (decoded once, at load) and the ones just closed.
                        before = prior[1] if prior is not None else ()
                        self.recent[hub] = (partition, (*before, *appended)[-rolling:])
                    else:
                        self.recent[hub] = (partition, self._recent_from_lines(new)[-rolling:])
                changed = True
            expired = hs.lifecycle.expire(hub, ttl_before)
            if expired:
                ttl_count += len(expired)
                tch = touched.setdefault(hub, _Touched())
                for ident, record in expired:
                    out.records.append((hub.encode(), orjson.dumps(record)))
                    if ident in hs.stored:
                        hs.stored.discard(ident)
                        tch.deletes.append(entry_key(hub, ident))
                changed = True
            if changed:
                dirty[hub] = hs
            elif (
                hub not in dirty
                and not hs.open
                and not len(hs.lifecycle)
                and hs.last_t is not None
                and hs.last_t < idle_before
            ):
                # Idle past its retained windows: its state goes (deletions, then h: last).
                evictions.extend((k, None) for k in (*hs.pend, *hs.pend_new, closed_key(hub), hub_key(hub)))
                del self.hubs[hub]
                self.recent.pop(hub, None)
                self._view_cache.pop(hub, None)
                self.counters.state_bound("idle_hubs")
        if ttl_count:
            self.counters.expired_lifecycles(ttl_count)
        if collapsed:
            self.counters.state_bound("sketch_buckets", collapsed)
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
                writes.append((all_key(partition), self._retained(existing, lines)))
            self.all_recent[partition] = tuple(recent[-rolling:])
        return writes, evictions

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
        merged = self._agg(min(a.start for a in aggs))
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
