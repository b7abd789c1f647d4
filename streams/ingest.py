"""The ingest stage: ``contest.events`` -> validated, packed records on the ingested topic.

faust pays its per-message cost (~3k records/s) for every record, and hubs send one event per
record. This stage reads ``contest.events`` in batches with plain aiokafka (``getmany``),
validates every event with :func:`streams.fastdecode.decode_events`, dead-letters the bad ones
(the same dead letters the worker writes) and packs each poll's good events into one batch per
(hubId, source partition) and the batches into as few records per worker partition as fit, on
``CT_TOPIC_INGESTED`` (format: :mod:`streams.ingested`), each keyed by one of its hubs with the
default partitioner, so every hub lands on the partition number the worker expects.

Delivery: with a transactional producer (Apache Kafka) each poll's ingested records, dead letters
and input offsets commit in one transaction (consume-transform-produce, exactly once for
read_committed readers). Where the broker refuses producer ids (Tansu) every send of a poll is
awaited, then the input offsets are committed (at-least-once; the worker deduplicates by (hub,
source partition, source offset)). A send or commit that fails or times out stops the stage
(:class:`IngestError`) with nothing committed past what is durable.

Retention. The consumer never resets a position by itself (``auto_offset_reset="none"``): a group
with no committed offset on a partition starts at its log start, and a committed offset that
retention deleted before the stage read it (the stage was down or behind) is logged once at
WARNING with the lost range, counted (:attr:`IngestCounters.lost_offsets`, and carried to the
worker's ``contest_ingest_lost_offsets_total`` with the dead-letter counts), and the stage goes on
from the log start. An offset beyond the log's end (a truncated or re-created topic) is never
skipped: the stage warns and asks again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    NoOffsetForPartitionError,
    OffsetOutOfRangeError,
)
from aiokafka.partitioner import murmur2
from orjson import Fragment

from contest_telemetry.logs import quiet_producer_probe
from contest_telemetry.schema import InvalidEvent
from contest_telemetry.settings import MAX_REQUEST_BYTES, KafkaSettings, TopicSettings, max_request_bytes
from streams.counters import DLQ_TRUNCATED, INGEST_LOST_OFFSETS
from streams.dlq import MAX_DLQ_BYTES, count_truncated, cut_dlq, dlq_headers, dlq_value
from streams.exceptions import ProcessingError, StreamsConfigError, StreamsError
from streams.fastdecode import Decoded, decode_events, screen_event_times
from streams.ingested import INGESTED_VERSION, RECORD_OVERHEAD, IngestedBatch, encode_batch, encode_record
from streams.settings import EventTimeSettings, IngestSettings

__all__ = ["IngestCounters", "IngestError", "IngestStage", "PackStats", "pack"]

log = logging.getLogger(__name__)

Ingested = tuple[bytes, bytes]  # (key = hubId, value)
DeadLetter = tuple[bytes | None, bytes, list[tuple[str, bytes]]]  # (source key, value, headers)

_MiB = 1 << 20
_IN_FLIGHT = 3  # polls on their way at once, at-least-once


class IngestError(StreamsError):
    """A send or commit of the ingest stage failed or timed out: the stage stops."""


@dataclass(slots=True)
class PackStats:
    """What one :func:`pack` call saw and produced."""

    records: int = 0
    events: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)  # this call's, by reason
    ingested: int = 0
    ingested_bytes: int = 0
    offsets: dict[int, int] = field(default_factory=dict)  # source partition -> last offset + 1
    carry: dict[str, int] = field(default_factory=dict)  # dead-letter counts no record carried yet


@dataclass(slots=True)
class IngestCounters:
    """Running totals of an :class:`IngestStage`."""

    polls: int = 0
    records: int = 0
    events: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    ingested: int = 0
    ingested_bytes: int = 0
    commits: int = 0
    commit_failures: int = 0
    lost_ranges: int = 0  # ranges of contest.events deleted by retention before they were read
    lost_offsets: int = 0  # offsets in those ranges

    def add(self, stats: PackStats) -> None:
        self.polls += 1
        self.records += stats.records
        self.events += stats.events
        for reason, n in stats.dead_letters.items():
            self.dead_letters[reason] = self.dead_letters.get(reason, 0) + n
        self.ingested += stats.ingested
        self.ingested_bytes += stats.ingested_bytes


@dataclass(slots=True)
class _Poll:
    ingested: list[Ingested]
    dead: list[DeadLetter]
    stats: PackStats
    offsets: dict[TopicPartition, int]  # last offset + 1 per source partition


class _Chunk:
    """The events of one future ingested record: one hub, one source partition. ``items`` are
    what its batch's ``events`` will hold (streams/ingested.py): normalised events, and source
    values (``orjson.Fragment``) that stand for their events; ``starts`` is the index of each
    item's first event in ``offsets``/``times``."""

    __slots__ = ("dropped", "hub", "items", "offsets", "raw", "starts", "times", "verbatim")

    def __init__(self, hub: str) -> None:
        self.hub = hub
        self.offsets: list[int] = []
        self.times: list[float] = []
        self.items: list[Any] = []
        self.starts: list[int] = []
        self.raw = 0  # source bytes of its events: an estimate of the encoded size
        self.dropped = 0
        self.verbatim = False  # holds a source value: a version 3 batch

    def add(self, item: Any, offsets: list[int], times: list[float]) -> None:
        self.starts.append(len(self.offsets))
        self.items.append(item)
        self.offsets.extend(offsets)
        self.times.extend(times)

    def extend(self, events: list[dict[str, Any]], offset: int, times: list[float]) -> None:
        start = len(self.offsets)
        self.starts.extend(range(start, start + len(events)))
        self.items.extend(events)
        self.offsets.extend([offset] * len(events))
        self.times.extend(times)


def _pieces(chunk: _Chunk, partition: int, dead: dict[str, int], max_bytes: int) -> list[tuple[bytes, int]]:
    """``chunk`` as encoded batches (:func:`streams.ingested.encode_batch`): one, or (when it
    encodes larger than ``max_bytes`` and holds several source records) halves split between
    source records; ``dead`` goes on the first of them. Each with its number of events."""
    value = encode_batch(
        IngestedBatch(chunk.hub, partition, chunk.offsets, chunk.times, chunk.items, dead, chunk.dropped)
    )
    offsets, starts = chunk.offsets, chunk.starts
    if len(value) + RECORD_OVERHEAD > max_bytes and offsets[0] != offsets[-1]:
        mid = len(starts) // 2
        # The item nearest to the middle that begins a source record (offsets repeat within one).
        cut = next(
            (
                i
                for d in range(mid + 1)
                for i in (mid - d, mid + d)
                if 0 < i < len(starts) and offsets[starts[i]] != offsets[starts[i] - 1]
            ),
            0,
        )
        if cut:
            at = starts[cut]
            first, second = _Chunk(chunk.hub), _Chunk(chunk.hub)
            first.offsets, second.offsets = offsets[:at], offsets[at:]
            first.times, second.times = chunk.times[:at], chunk.times[at:]
            first.items, second.items = chunk.items[:cut], chunk.items[cut:]
            first.starts, second.starts = starts[:cut], [i - at for i in starts[cut:]]
            first.verbatim = second.verbatim = chunk.verbatim
            first.dropped = chunk.dropped
            return _pieces(first, partition, dead, max_bytes) + _pieces(second, partition, {}, max_bytes)
    return [(value, len(offsets))]


def _records(
    chunks: list[tuple[int, _Chunk]],
    partitions: int | None,
    dead: dict[str, int],
    max_bytes: int,
    max_events: int,
    version: int = INGESTED_VERSION,
) -> list[Ingested]:
    """The poll's chunks as ingested records (see streams/ingested.py): per worker partition, the
    batches in chunk order, as few records as ``max_bytes`` allows, the last one carrying the
    largest event time of the partition's events (``wm``), each holding at most ``max_events``
    events unless one batch has more. Without ``partitions``: one record per chunk, without
    ``wm``. ``dead`` rides on the first batch."""
    # (worker partition, hub, batches with their event counts, largest event time)
    pieces: list[tuple[int, str, list[tuple[bytes, int]], float]] = []
    part_of: dict[str, int] = {}
    for partition, chunk in chunks:
        hub = chunk.hub
        out = part_of.get(hub)
        if out is None:
            out = part_of[hub] = (murmur2(hub.encode()) & 0x7FFFFFFF) % partitions if partitions else 0
        pieces.append((out, hub, _pieces(chunk, partition, dead, max_bytes), max(chunk.times)))
        dead = {}
    if not partitions:
        return [
            (hub.encode(), encode_record([b], None, version))
            for _, hub, batches, _ in pieces
            for b, _n in batches
        ]
    by_part: dict[int, list[tuple[str, tuple[bytes, int]]]] = {}
    wms: dict[int, float] = {}
    for out, hub, batches, t_max in pieces:
        by_part.setdefault(out, []).extend((hub, b) for b in batches)
        if out not in wms or t_max > wms[out]:
            wms[out] = t_max
    records: list[Ingested] = []
    budget = max_bytes - RECORD_OVERHEAD
    for out, items in by_part.items():
        current: list[bytes] = []
        size = events = 0
        key = b""
        for hub, (batch, n) in items:
            if current and (size + len(batch) + 1 > budget or events + n > max_events):
                records.append((key, encode_record(current, None, version)))
                current, size, events = [], 0, 0
            if not current:
                key = hub.encode()  # any hub of the record: all map to this partition
            current.append(batch)
            size += len(batch) + 1
            events += n
        records.append((key, encode_record(current, wms[out], version)))
    return records


def pack(
    records_by_partition: Mapping[int, Sequence[Any]],
    *,
    topic: str,
    max_batch_events: int = 2000,
    max_batch_bytes: int = 1_000_000,
    carry: Mapping[str, int] | None = None,
    partitions: int | None = None,
    event_time: tuple[float | None, float | None] = (None, None),
    verbatim: bool = True,
    dlq_max_bytes: int = MAX_DLQ_BYTES,
) -> tuple[list[Ingested], list[DeadLetter], PackStats]:
    """Decode, validate and pack one poll of ``topic`` (partition -> records in offset order; each
    record has ``.partition``, ``.offset``, ``.key``, ``.value``, ``.timestamp`` in ms).

    Returns the ingested records, the dead letters and the stats. Events are packed into one
    batch per hub and source partition (more when a hub has more than ``max_batch_events`` events
    or ~``max_batch_bytes``; never splitting a source record's events). With ``partitions`` (of the
    ingested topic) the batches of each worker partition share as few records as
    ``max_batch_events`` and ``max_batch_bytes`` allow, and the poll's last record for each
    partition carries ``wm`` (see :mod:`streams.ingested`); without, each batch is a record of its
    own. ``carry`` (dead-letter counts a previous poll could not attach to a record) and this
    poll's dead-letter counts ride on the first batch; with no batch they come back in
    ``stats.carry``. ``event_time`` (most ms ahead of, behind the record's timestamp;
    :class:`streams.settings.EventTimeSettings`) dead-letters events out of that window.
    ``verbatim`` (``CT_INGEST_VERBATIM``): a record whose events are exactly its value goes into
    its batch as it came (version 3 records, see streams/ingested.py); off: normalised events only
    (version 2). A dead letter larger than ``dlq_max_bytes`` (``CT_TOPIC_DLQ_MAX_BYTES``) has
    its payload cut (:func:`streams.dlq.cut_dlq`).
    """
    max_future, max_past = event_time
    stats = PackStats()
    ingested: list[Ingested] = []
    dead_letters: list[DeadLetter] = []
    reasons = stats.dead_letters
    chunks: list[tuple[int, _Chunk]] = []  # in the order they fill up (per hub: source order)
    raw_budget = max_batch_bytes // 2  # normalised events run ~1.5x their source bytes
    n_records = 0
    for partition, records in records_by_partition.items():
        if not records:
            continue
        open_chunks: dict[str, _Chunk] = {}
        open_get = open_chunks.get
        n_records += len(records)
        for rec in records:
            value = rec.value
            try:
                decoded = decode_events(value)
            except Exception as exc:  # the last-resort guard: never a crash loop on one record
                log.error(
                    "%s[%d]@%d: decoding failed, record dead-lettered: %r", topic, partition, rec.offset, exc
                )
                decoded = Decoded(
                    invalid=[InvalidEvent(ProcessingError(f"{type(exc).__name__}: {exc}"[:2000]))]
                )
            screen_event_times(decoded, rec.timestamp, max_future, max_past)
            if decoded.invalid:
                for invalid in decoded.invalid:
                    dv = dlq_value(
                        invalid,
                        topic=topic,
                        partition=partition,
                        offset=rec.offset,
                        key=rec.key,
                        original=value,
                        envelope=decoded.envelope,
                    )
                    reason = dv["reason"]
                    reasons[reason] = reasons.get(reason, 0) + 1
                    data, cut = cut_dlq(dv, dlq_max_bytes)
                    dead_letters.append((rec.key, data, dlq_headers(dv, cut=cut)))
            events = decoded.events
            if not events:
                continue
            size = len(value)  # events came from it: not None
            hub = events[0]["hubId"]
            # The source value can stand for its events: all valid, exact, of one hub.
            exact = verbatim and decoded.verbatim and not decoded.invalid
            if len(events) == 1:  # the common case, kept lean: this loop runs per record
                t = decoded.times[0]
                if t is None:
                    ts = rec.timestamp
                    t = float(ts) if ts is not None else 0.0
                chunk = open_get(hub)
                if chunk is None or len(chunk.offsets) >= max_batch_events or chunk.raw + size > raw_budget:
                    chunk = open_chunks[hub] = _Chunk(hub)
                    chunks.append((partition, chunk))
                chunk.starts.append(len(chunk.offsets))
                chunk.offsets.append(rec.offset)
                chunk.times.append(t)
                if exact:
                    chunk.items.append(Fragment(value))
                    chunk.verbatim = True
                else:
                    chunk.items.append(events[0])
                chunk.raw += size
                if decoded.publisher_dropped:  # an envelope of one event
                    chunk.dropped += decoded.publisher_dropped
                continue
            n, offset = len(events), rec.offset
            times: list[Any] = decoded.times  # floats once the None are filled in
            if None in times:
                ts = rec.timestamp
                fallback = float(ts) if ts is not None else 0.0
                times = [fallback if t is None else t for t in times]
            dropped = decoded.publisher_dropped
            if all(ev["hubId"] == hub for ev in events):
                groups = [(hub, events, times)]
            else:  # events of several hubs in one record: split by hub (each keeps its offset)
                exact = False
                by_hub: dict[str, tuple[list[dict[str, Any]], list[Any]]] = {}
                for ev, t in zip(events, times, strict=True):
                    group = by_hub.setdefault(ev["hubId"], ([], []))
                    group[0].append(ev)
                    group[1].append(t)
                groups = [(h, evs, ts_) for h, (evs, ts_) in by_hub.items()]
            for group_hub, group_events, group_times in groups:
                k = len(group_events)
                raw = size * k // n
                chunk = open_get(group_hub)
                if chunk is None or len(chunk.offsets) + k > max_batch_events or chunk.raw + raw > raw_budget:
                    chunk = open_chunks[group_hub] = _Chunk(group_hub)
                    chunks.append((partition, chunk))
                if exact:
                    chunk.add(Fragment(value), [offset] * k, group_times)
                    chunk.verbatim = True
                else:
                    chunk.extend(group_events, offset, group_times)
                chunk.raw += raw
                chunk.dropped += dropped  # the publisher's report belongs to the envelope's (first) hub
                dropped = 0
        stats.offsets[partition] = records[-1].offset + 1
    stats.records = n_records
    stats.events = sum(len(chunk.offsets) for _, chunk in chunks)
    dead = dict(carry or {})
    for reason, n in reasons.items():
        dead[reason] = dead.get(reason, 0) + n
    if chunks:
        version = INGESTED_VERSION if verbatim else 2
        ingested = _records(chunks, partitions, dead, max_batch_bytes, max_batch_events, version)
        dead = {}
    stats.carry = dead
    stats.ingested = len(ingested)
    stats.ingested_bytes = sum(len(v) for _, v in ingested)
    return ingested, dead_letters, stats


class IngestStage:
    """Consume ``topics.events`` in batches, produce :func:`pack`'s output, commit the offsets.

    ``start()`` (the producer first: a transactional one fences and aborts what a predecessor with
    the same transactional id left open, before the consumer reads the committed offsets), then
    ``run(stop_event)`` until the event is set (the poll in hand is finished and committed), then
    ``stop()``. ``run`` raises :class:`IngestError` when a send or commit fails.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        topics: TopicSettings,
        settings: IngestSettings | None = None,
        counters: IngestCounters | None = None,
        event_time: EventTimeSettings | None = None,
    ) -> None:
        self.kafka = kafka
        self.topics = topics
        self.settings = settings or IngestSettings()
        if 2 * self.settings.max_batch_bytes > topics.ingested_max_message_bytes:
            raise StreamsConfigError(
                f"CT_INGEST_MAX_BATCH_BYTES ({self.settings.max_batch_bytes}) must be at most half of "
                f"CT_TOPIC_INGESTED_MAX_MESSAGE_BYTES ({topics.ingested_max_message_bytes}): a packed "
                "record's events run up to ~1.5x their source bytes"
            )
        self.event_time = (event_time or EventTimeSettings()).window_ms()
        self.counters = counters if counters is not None else IngestCounters()
        self.transactional = False
        self.transactional_id: str | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._carry: dict[str, int] = {}
        self._queueing = asyncio.Lock()
        self._last_log = time.monotonic()
        self._logged = IngestCounters()

    # -- lifecycle -----------------------------------------------------------------------------
    def _producer_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.kafka.aiokafka_kwargs(),
            "client_id": f"{self.kafka.client_id}-ingest",
            "acks": "all",
            "linger_ms": s.linger_ms,
            "compression_type": None if s.compression == "none" else s.compression,
            "max_batch_size": _MiB,
            "max_request_size": max_request_bytes(
                self.topics.ingested_max_message_bytes, self.topics.output_max_message_bytes
            ),
        }

    async def _start_producer(self) -> AIOKafkaProducer:
        s = self.settings
        if s.transactions in ("auto", "on"):
            tid = f"{s.transactional_id}-{s.instance_id or uuid.uuid4().hex[:12]}"
            producer = AIOKafkaProducer(
                **self._producer_kwargs(),
                transactional_id=tid,
                transaction_timeout_ms=round(s.transaction_timeout_s * 1000),
            )
            try:
                with quiet_producer_probe() if s.transactions == "auto" else contextlib.nullcontext():
                    await asyncio.wait_for(producer.start(), s.send_timeout_s)
            except Exception as exc:
                await producer.stop()
                if s.transactions == "on":
                    raise IngestError(f"the broker refused a transactional producer: {exc!r}") from exc
                log.warning(
                    "ingest: the broker refused a transactional producer; at-least-once "
                    "(sends acknowledged, then offsets committed)"
                )
            else:
                self.transactional, self.transactional_id = True, tid
                return producer
        producer = AIOKafkaProducer(**self._producer_kwargs())
        try:
            await asyncio.wait_for(producer.start(), s.send_timeout_s)
        except Exception as exc:
            await producer.stop()
            raise IngestError(f"could not start the producer: {exc!r}") from exc
        return producer

    async def start(self) -> IngestStage:
        s = self.settings
        self._producer = await self._start_producer()
        consumer = AIOKafkaConsumer(
            self.topics.events,
            **self.kafka.aiokafka_kwargs(),  # type: ignore[arg-type]
            client_id=f"{self.kafka.client_id}-ingest",
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="none",  # a deleted offset is reported (_out_of_range), never skipped silently
            isolation_level="read_committed",
            max_partition_fetch_bytes=MAX_REQUEST_BYTES,
            fetch_max_wait_ms=s.fetch_max_wait_ms,
        )
        try:
            await consumer.start()
        except Exception:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.stop()
            raise
        self._consumer = consumer
        self._last_log = time.monotonic()
        log.info(
            "ingest: %s -> %s (group %s, %s)",
            self.topics.events,
            self.topics.ingested,
            s.group_id,
            f"transactional id {self.transactional_id}" if self.transactional else "at-least-once",
        )
        return self

    async def stop(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        try:
            if consumer is not None:
                await consumer.stop()
        finally:
            if producer is not None:
                await producer.stop()

    async def __aenter__(self) -> IngestStage:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, stop_event: asyncio.Event | None = None) -> None:
        """Poll, pack, produce, commit until ``stop_event`` is set (never, when None); then finish
        the polls in hand (sent and committed) and return.

        Pipelined: a poll is packed in a worker thread (so the event loop keeps the previous
        polls' requests moving) while earlier polls are on their way. With transactions one poll
        is in flight at a time (the next transaction begins once the previous one committed);
        at-least-once, up to three are, and a poll's offsets are committed only after every
        earlier poll's were, so no commit passes a poll that is not acknowledged."""
        if self._consumer is None:
            await self.start()
        consumer = self._consumer
        assert consumer is not None
        stop = stop_event or asyncio.Event()
        s = self.settings
        inflight: collections.deque[asyncio.Task[PackStats]] = collections.deque()
        try:
            while not stop.is_set():
                while inflight and inflight[0].done():
                    await inflight.popleft()  # raises what stopped a delivery
                batch = await self._poll(consumer)
                if batch:
                    poll = await self._pack(batch)
                    limit = 1 if self.transactional else _IN_FLIGHT
                    while len(inflight) >= limit:
                        await inflight.popleft()
                    before = inflight[-1] if inflight else None
                    inflight.append(asyncio.create_task(self._deliver(poll, before), name="ingest-deliver"))
                now = time.monotonic()
                if now - self._last_log >= s.log_interval_s:
                    self._log_progress(now)
            while inflight:
                await inflight.popleft()
        finally:
            for task in inflight:
                task.cancel()
            for task in inflight:
                with contextlib.suppress(BaseException):
                    await task
        self._log_progress(time.monotonic())

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """One poll: the first records, then what else arrives within ``poll_linger_ms`` (up to
        ``max_poll_records``). At a live rate a bare ``getmany`` returns a record or two, and
        each poll costs a produce and a commit round trip (a transaction on Apache Kafka), which
        capped the rate the stage could keep fresh; lingering packs more events per record for
        the worker too."""
        s = self.settings
        batch = await self._fetch(consumer, s.poll_timeout_ms, s.max_poll_records)
        if not batch or s.poll_linger_ms <= 0:
            return batch
        merged: dict[TopicPartition, list[Any]] = {tp: list(records) for tp, records in batch.items()}
        total = sum(len(records) for records in merged.values())
        deadline = time.monotonic() + s.poll_linger_ms / 1000.0
        while total < s.max_poll_records:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = await self._fetch(consumer, int(left * 1000) + 1, s.max_poll_records - total)
            for tp, records in more.items():
                merged.setdefault(tp, []).extend(records)
                total += len(records)
        return merged

    async def _fetch(
        self, consumer: AIOKafkaConsumer, timeout_ms: int, max_records: int
    ) -> dict[TopicPartition, list[Any]]:
        """``getmany``; a partition without a valid position is set (nothing returned then)."""
        try:
            return await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except NoOffsetForPartitionError as exc:
            # No committed offset (a new group, or a partition it never committed on): start at
            # the log start, what "earliest" did. Distinct from a committed offset retention deleted.
            tp = exc.args[0] if exc.args else None
            if not isinstance(tp, TopicPartition):
                raise
            if tp in consumer.assignment():
                await consumer.seek_to_beginning(tp)
            return {}
        except OffsetOutOfRangeError as exc:
            wanted = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else None
            if not wanted:
                raise
            await self._out_of_range(consumer, wanted)
            return {}

    async def _out_of_range(self, consumer: AIOKafkaConsumer, wanted: Mapping[TopicPartition, int]) -> None:
        """The broker no longer (or not yet) holds the offsets these partitions asked for."""
        assigned = consumer.assignment()
        tps = [tp for tp in wanted if tp in assigned]  # revoked meanwhile: the new owner sees it
        if not tps:
            return
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            offset, start, end = wanted[tp], starts[tp], ends[tp]
            if offset < start:
                lost = start - offset
                self.counters.lost_ranges += 1
                self.counters.lost_offsets += lost
                # Rides to the worker's exporter with the next poll's dead-letter counts.
                self._carry[INGEST_LOST_OFFSETS] = self._carry.get(INGEST_LOST_OFFSETS, 0) + lost
                log.warning(
                    "ingest: %s[%d]: offsets %d..%d (%d) were deleted by retention before the ingest "
                    "stage read them; going on from %d",
                    tp.topic,
                    tp.partition,
                    offset,
                    start - 1,
                    lost,
                    start,
                )
                consumer.seek(tp, start)
            else:
                # Beyond the end (a log truncated by an unclean leader election, a re-created
                # topic) or a leader change in progress: skipping could drop records; ask again.
                log.warning(
                    "ingest: %s[%d]: offset %d is out of range (the log holds %d..%d); retrying",
                    tp.topic,
                    tp.partition,
                    offset,
                    start,
                    end - 1,
                )
                consumer.seek(tp, offset)
                await asyncio.sleep(1.0)

    async def process(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> PackStats:
        """One poll, not pipelined: pack it, send everything, commit its offsets."""
        return await self._deliver(await self._pack(batch), None)

    async def _pack(self, batch: Mapping[TopicPartition, Sequence[Any]]) -> _Poll:
        producer = self._producer
        assert producer is not None
        s, topics = self.settings, self.topics
        # The producer's view of the ingested topic, which its partitioner uses too (cached metadata).
        partitions = len(await producer.partitions_for(topics.ingested))
        ingested, dead, stats = await asyncio.to_thread(
            pack,
            {tp.partition: records for tp, records in batch.items()},
            topic=topics.events,
            max_batch_events=s.max_batch_events,
            max_batch_bytes=s.max_batch_bytes,
            carry=self._carry,
            partitions=partitions,
            event_time=self.event_time,
            verbatim=s.verbatim,
            dlq_max_bytes=topics.dlq_max_bytes,
        )
        # The counts ride on this poll's first record; if its delivery fails the stage stops.
        self._carry = stats.carry
        truncated = count_truncated(dead)
        if truncated:  # counted by the worker's exporter, carried like the dead-letter counts
            self._carry[DLQ_TRUNCATED] = self._carry.get(DLQ_TRUNCATED, 0) + truncated
        offsets = {tp: stats.offsets[tp.partition] for tp in batch if tp.partition in stats.offsets}
        return _Poll(ingested, dead, stats, offsets)

    async def _deliver(self, poll: _Poll, before: asyncio.Task[PackStats] | None) -> PackStats:
        """Send a poll's records and commit its offsets: in its transaction, or (at-least-once)
        once they are acknowledged and ``before`` (the previous poll's delivery) is done."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        ingested, dead, stats = poll.ingested, poll.dead, poll.stats
        if self.transactional and before is not None:
            await before
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in poll.offsets.items() if tp in assigned}
        if len(offsets) < len(poll.offsets):
            log.info(
                "ingest: partitions revoked since the poll; not committing %s",
                sorted(set(poll.offsets) - set(offsets)),
            )
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                if self.transactional:
                    await self._transact(producer, ingested, dead, offsets)
                else:
                    await self._send_all(producer, ingested, dead)
        except Exception as exc:
            if self.transactional:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.abort_transaction(), 5)
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
            raise IngestError(
                f"sending {stats.ingested} ingested records and {len(dead)} dead letters "
                f"(offsets {_describe(offsets)}) {what}; nothing of this poll was committed"
            ) from exc
        if before is not None:
            await before  # raises when an earlier poll failed: then nothing later is committed
        self.counters.add(stats)
        if not self.transactional and offsets:
            await self._commit(consumer, offsets)
        elif offsets:
            self.counters.commits += 1
        return stats

    async def _send(
        self, producer: AIOKafkaProducer, ingested: list[Ingested], dead: list[DeadLetter]
    ) -> list[asyncio.Future[Any]]:
        """Queue every record of a poll (the default partitioner places them by key).

        Polls are queued one after the other, whole (the lock wakes its waiters in order, and
        the deliveries are created in poll order): ``producer.send`` can wait for buffer space,
        and interleaved sends of two polls put a hub's later events ahead of its earlier ones,
        which the worker's per-hub source-offset dedup would then drop as already applied."""
        send, out_topic, dlq_topic = producer.send, self.topics.ingested, self.topics.dlq
        async with self._queueing:
            futures = [await send(out_topic, value, key=key) for key, value in ingested]
            for key, value, headers in dead:
                futures.append(await send(dlq_topic, value, key=key, headers=headers))
        return futures

    async def _send_all(
        self, producer: AIOKafkaProducer, ingested: list[Ingested], dead: list[DeadLetter]
    ) -> None:
        futures = await self._send(producer, ingested, dead)
        if futures:
            await asyncio.gather(*futures)

    async def _transact(
        self,
        producer: AIOKafkaProducer,
        ingested: list[Ingested],
        dead: list[DeadLetter],
        offsets: dict[TopicPartition, int],
    ) -> None:
        await producer.begin_transaction()
        futures = await self._send(producer, ingested, dead)
        if offsets:  # its round trips overlap the produce requests
            await producer.send_offsets_to_transaction(offsets, self.settings.group_id)
        if futures:
            await asyncio.gather(*futures)
        await producer.commit_transaction()

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        try:
            async with asyncio.timeout(self.settings.send_timeout_s):
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # A rebalance: the new owner re-reads from the last commit (the worker deduplicates).
            self.counters.commit_failures += 1
            log.warning("ingest: commit of %s skipped (group rebalanced): %s", _describe(offsets), exc)
        except (KafkaError, TimeoutError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else f"failed: {exc!r}"
            raise IngestError(f"committing offsets {_describe(offsets)} {what}") from exc
        else:
            self.counters.commits += 1

    def _log_progress(self, now: float) -> None:
        c, p = self.counters, self._logged
        elapsed = max(now - self._last_log, 1e-9)
        if c.records != p.records:
            log.info(
                "ingest: %d records, %d events (%.0f/s), %d dead letters -> %d ingested records (%.1f MiB)",
                c.records - p.records,
                c.events - p.events,
                (c.events - p.events) / elapsed,
                sum(c.dead_letters.values()) - sum(p.dead_letters.values()),
                c.ingested - p.ingested,
                (c.ingested_bytes - p.ingested_bytes) / _MiB,
            )
        self._logged = dataclasses.replace(c, dead_letters=dict(c.dead_letters))
        self._last_log = now


def _describe(offsets: Mapping[TopicPartition, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={o}" for tp, o in sorted(offsets.items())) or "none"
