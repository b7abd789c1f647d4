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

:class:`Engine` keeps the record-level control flow (decoding, applying events, the staged table
writes) and delegates the rest, the way aiokafka's producer hands batches to its accumulator and
sender: :class:`~streams.engine_cache.TableCache` (the decoded table: hubs and partitions,
loaded once), :class:`~streams.closing.WindowCloser` (closing windows, expiring lifecycles,
evicting idle hubs) and :class:`~streams.views.RollingViews` (the exporter's views).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, cast

import orjson

from contest_telemetry.schema import WORKFLOW_FAILED, InvalidEvent, short_type
from contest_telemetry.schema.contract import MULTI_ACTOR_OVER
from streams.closing import WindowCloser
from streams.counters import CounterSink
from streams.dlq import MAX_DLQ_BYTES, cut_dlq, dlq_headers, dlq_value
from streams.engine_cache import Store, TableCache
from streams.exceptions import HubLimitError, ProcessingError, StateError
from streams.fastdecode import decode_events, screen_event_times
from streams.ingested import INGESTED_MESSAGE, parse_ingested
from streams.lifecycle import NO_EFFECT, dropped_record
from streams.outputs import Outputs, Touched
from streams.settings import EventTimeSettings, WorkerSettings
from streams.snapshot import PipelineSnapshot
from streams.state import (
    HubState,
    PartState,
    encode_entry,
    encode_window,
    entry_key,
    hub_key,
    part_key,
    window_key,
)
from streams.views import ALL_HUB, RollingViews
from streams.windows import WindowAgg, closed_index

__all__ = ["ALL_HUB", "Engine", "Outputs", "Store"]

log = logging.getLogger(__name__)

_INGESTED_PREFIX = b'{"message":"' + INGESTED_MESSAGE.encode() + b'"'

# One hub's events of one record: (source partition, events, event times, source offsets).
_Group = tuple[int, list[dict[str, Any]], list[float], list[int]]


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
        events_topic: str = "contest.events",
    ) -> None:
        self.settings = settings
        self.dlq_max_bytes = dlq_max_bytes  # CT_TOPIC_DLQ_MAX_BYTES: larger payloads are cut
        # Staged: a record's table writes wait for :meth:`flush`, which writes each key touched
        # since the last flush once (see "Staged writes" in streams/state.py). Otherwise every
        # record's ``Outputs.writes`` carries its own writes (the reference, and the off switch).
        self.stage = stage
        # Checked where this engine validates events itself (records of contest.events).
        self.event_time = (event_time or EventTimeSettings()).window_ms()
        self.counters: CounterSink = counters or CounterSink()
        self.source_topic = source_topic
        self.events_topic = events_topic  # what an ingested record's events were read from
        self.max_hubs = settings.max_hubs
        self._hub_limit_logged = -math.inf  # monotonic time of the last hub_limit warning
        self.size = settings.window_ms
        self.grace = settings.grace_ms
        self.alpha = settings.alpha
        self.max_buckets = settings.sketch_max_buckets
        self.max_value = settings.max_state_value_bytes
        self.views = RollingViews(self.size, settings.rolling_windows, self._agg)
        self.cache = TableCache(store, settings.max_open_contests, self.views)
        self.closer = WindowCloser(settings, self.cache, self.views, self.counters, self._agg)
        self.newest_event_ms: float | None = None
        self._reset_staged()
        # Records (partition, offset) whose processing failed once in staged mode: dead-lettered
        # when they come again (after the re-read a rewind asks for). Bounded by the failures
        # between two flushes: a rewind drops every staged record.
        self._poison: set[tuple[int, int]] = set()

    def _reset_staged(self) -> None:
        # What the records since the last flush changed, written by flush(): the hubs and what
        # they touched, closed windows and evicted keys (``cache.staged``), and the partitions
        # whose p: moved.
        self._dirty: dict[str, HubState] = {}
        self._touched: dict[str, Touched] = {}
        self.cache.staged = {}
        self._dirty_parts: set[int] = set()
        self.staged_events = 0

    def _agg(self, start: int) -> WindowAgg:
        return WindowAgg(start, self.alpha, self.max_buckets)

    # The decoded state and the views, as attributes of the engine (tests, benchmarks).
    @property
    def store(self) -> Store:
        return self.cache.store

    @property
    def hubs(self) -> dict[str, HubState]:
        return self.cache.hubs

    @property
    def parts(self) -> dict[int, PartState]:
        return self.cache.parts

    @property
    def loaded(self) -> bool:
        return self.cache.loaded

    @property
    def recent(self) -> dict[str, tuple[int | None, tuple[WindowAgg, ...]]]:
        return self.views.recent

    @property
    def all_recent(self) -> dict[int, tuple[WindowAgg, ...]]:
        return self.views.all_recent

    # -- caches --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget decoded state (after a rebalance the table is the truth)."""
        self.cache.reset()
        self.views.reset()
        self._reset_staged()

    def _load(self) -> None:
        self.cache.load()

    def applied(self, partition: int) -> int:
        """The last source offset of ``partition`` the state contains (-1: none yet)."""
        return self.cache.part(partition).applied

    def peek_applied(self, partition: int) -> int:
        """:meth:`applied` without loading the partition into the caches (for readers outside the
        agent, e.g. the watchdog: a read during recovery must not leave a stale cached state)."""
        return self.cache.peek_applied(partition)

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
            part = self.cache.part(partition)
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

    def _refuse_hub(
        self,
        out: Outputs,
        hub: str,
        source: int,
        events: list[dict[str, Any]],
        offsets: list[int],
        ingested: bool,
        key: bytes | None,
        value: bytes | None,
        topic: str | None,
    ) -> None:
        """Dead-letter the events of a hub there is no room for (``CT_WORKER_MAX_HUBS``), each
        under the record it came in: for an ingested record, its source record on contest.events."""
        refused = HubLimitError(
            f"hub {hub[:200]!r}: the worker keeps at most {self.max_hubs} hubs (CT_WORKER_MAX_HUBS)"
        )
        if ingested:
            for ev, src_offset in zip(events, offsets, strict=True):
                self._dead_letter(
                    out,
                    [InvalidEvent(refused, raw=ev)],
                    topic=self.events_topic,
                    partition=source,
                    offset=src_offset,
                    key=hub.encode(),
                    value=None,
                    envelope=False,
                )
        else:
            self._dead_letter(
                out,
                [InvalidEvent(refused, raw=ev) for ev in events],
                topic=topic or self.source_topic,
                partition=source,
                offset=offsets[0],
                key=key,
                value=value,
                envelope=False,
            )
        self.counters.state_bound("hubs", len(events))
        now = time.monotonic()
        if now - self._hub_limit_logged >= 60.0:  # a flood of new hubs logs once a minute
            self._hub_limit_logged = now
            log.warning("%s: its events are dead-lettered (reason hub_limit; counted)", refused)

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
        self.cache.part(partition).applied = offset
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
        cache = self.cache
        if not cache.loaded:
            cache.load()
        part = cache.part(partition)
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
        hubs = cache.hubs
        for hub, (source, events, times, offsets) in groups:
            hs = hubs.get(hub)
            if hs is None:
                if len(hubs) >= self.max_hubs:
                    if fresh:
                        ingested = value is not None and value.startswith(_INGESTED_PREFIX)
                        self._refuse_hub(out, hub, source, events, offsets, ingested, key, value, topic)
                    continue
                hs = cache.hub(hub, partition)
            done = hs.applied.get(source, -1)
            if offsets[-1] <= done:
                continue
            tch = touched.get(hub)
            if tch is None:
                tch = touched[hub] = Touched()
            self._apply(hs, source, done, events, times, offsets, partition, k_prev, wm_prev, out, tch)
            dirty[hub] = hs
            applied_any = True
        if fresh:
            if max_t is not None and (part.watermark is None or max_t > part.watermark):
                part.watermark = max_t
            part.applied = offset
            k_new = closed_index(part.watermark, self.size, self.grace)
            if k_new is not None and (k_prev is None or k_new > k_prev):
                staged = cache.staged
                closed_writes, evictions = self.closer.sweep(part, k_prev, k_new, out, dirty, touched)
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
        dirty, staged = self._dirty, self.cache.staged
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
            self._hub_writes(hs, touched.get(hub) or Touched(), writes, out)
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
            writes.append((part_key(partition), self.cache.parts[partition].to_bytes()))
            parts.append(partition)
        if writes:
            self.counters.state_writes(len(writes), sum(len(v) for _, v in writes if v is not None))
        self._reset_staged()

    def _hub_writes(
        self, hs: HubState, tch: Touched, writes: list[tuple[str, bytes | None]], out: Outputs
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
        tch: Touched,
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

    # -- the exporter's view -------------------------------------------------------------------
    def snapshot(self, assigned: set[int] | None = None) -> PipelineSnapshot:
        """Views of the last closed window and the rolling merge, per hub this worker owns and
        ``_all`` (merged over the partitions it owns). Safe to call from another thread."""
        return self.views.snapshot(self.cache.parts, self.newest_event_ms, assigned)
