"""Read, count and redrive dead letters (the records ``streams/dlq.py`` writes).

A read is bounded: it starts at each selected partition's first wanted offset (``--from-offset``,
the first record at or after ``--since``, else the log start), stops at the partition's end *as it
was when the read started* (or ``--to-offset``), and reads at most ``max_records`` dead letters in
all; the report says when it stopped at that bound (``truncated``) and where to go on
(``nextOffsets``).

Redrive turns a dead letter back into the record it stood for: the bad event itself (``event``;
for an event of an envelope, that event alone: the envelope's other events were processed) or
the bytes of a record that was not JSON (``originalBase64``). A dead letter whose payload was cut
(``payloadTruncated``) cannot be redriven. The record is checked as the worker will check it
(:func:`streams.fastdecode.decode_events`, which defers to the schema for anything it is unsure of,
and the event-time window of CT_EVENT_TIME_* against the time of the redrive) and skipped when it
still fails; otherwise it is sent with the dead letter's key and a ``ct-redrive`` header naming
the dead letter (``<dlq topic>/<partition>/<offset>``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contest_telemetry.exceptions import ContestTelemetryError
from contest_telemetry.schema import ms_to_iso
from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import await_partitions
from sinks.dlq.settings import DlqToolSettings
from streams.dlq import SOURCE_HEADER
from streams.fastdecode import decode_events, screen_event_times
from streams.settings import EventTimeSettings

__all__ = [
    "NOT_A_DEAD_LETTER",
    "REDRIVE_HEADER",
    "DeadLetter",
    "DlqError",
    "InspectReport",
    "ReadStats",
    "RedriveReport",
    "Selection",
    "inspect",
    "read_dead_letters",
    "redrive",
]

REDRIVE_HEADER = "ct-redrive"
NOT_A_DEAD_LETTER = "not-a-dead-letter"  # the reason counted for records of the topic that are not ours
_ERROR_CHARS = 300


class DlqError(ContestTelemetryError):
    """The dead-letter topic cannot be read as asked (missing topic, unknown partition)."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: every condition given must hold (empty sets: any)."""

    reasons: frozenset[str] = frozenset()
    hubs: frozenset[str] = frozenset()
    since_ms: float | None = None  # the dead letter's Kafka timestamp (when it failed)
    until_ms: float | None = None
    partitions: frozenset[int] = frozenset()
    from_offset: int | None = None
    to_offset: int | None = None  # inclusive
    max_records: int = 100_000

    def matches(self, letter: DeadLetter) -> bool:
        if self.reasons and letter.reason not in self.reasons:
            return False
        if self.hubs and letter.hub not in self.hubs:
            return False
        if self.since_ms is not None and letter.timestamp_ms < self.since_ms:
            return False
        return not (self.until_ms is not None and letter.timestamp_ms >= self.until_ms)


@dataclass(slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: dict[str, Any] | None  # None: the record is not a dead letter of ours

    @classmethod
    def parse(
        cls, partition: int, offset: int, timestamp_ms: int, key: bytes | None, raw: bytes | None
    ) -> DeadLetter:
        try:
            value = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict) or not isinstance(value.get("reason"), str):
            value = None
        return cls(partition, offset, timestamp_ms, key, value)

    @property
    def reason(self) -> str:
        return NOT_A_DEAD_LETTER if self.value is None else str(self.value["reason"])

    @property
    def source(self) -> dict[str, Any]:
        src = self.value.get("source") if self.value is not None else None
        return src if isinstance(src, dict) else {}

    @property
    def hub(self) -> str | None:
        """The failed event's hubId, else the source record's key (a hub's records are keyed by it)."""
        event = self.value.get("event") if self.value is not None else None
        if isinstance(event, dict) and isinstance(event.get("hubId"), str):
            return str(event["hubId"])
        key = self.source.get("key")
        return key if isinstance(key, str) else None

    @property
    def fields(self) -> list[str]:
        errors = self.value.get("errors") if self.value is not None else None
        if not isinstance(errors, list):
            return []
        return [str(e.get("field") or "(record)") for e in errors if isinstance(e, dict)]

    def payload(self) -> bytes | None:
        """The record this dead letter stands for, or None when it cannot be rebuilt (cut payload)."""
        value = self.value
        if value is None or value.get("payloadTruncated"):
            return None
        if "event" in value:
            return orjson.dumps(value["event"])
        original = value.get("originalBase64")
        if isinstance(original, str):
            try:
                return base64.b64decode(original, validate=True)
            except ValueError:
                return None
        return None

    def sample(self) -> dict[str, Any]:
        value = self.value or {}
        src = self.source
        return {
            "partition": self.partition,
            "offset": self.offset,
            "timestamp": ms_to_iso(self.timestamp_ms),
            "reason": self.reason,
            "hub": self.hub,
            "fields": self.fields,
            "error": str(value.get("error", ""))[:_ERROR_CHARS],
            "source": f"{src.get('topic')}/{src.get('partition')}/{src.get('offset')}" if src else None,
            "index": value.get("index"),
        }


@dataclass
class ReadStats:
    read: int = 0  # records read from the dead-letter topic
    matched: int = 0
    truncated: bool = False  # stopped at max_records with records left in the range
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> [start, stop)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "matched": self.matched,
            "truncated": self.truncated,
            "nextOffsets": {str(p): o for p, o in sorted(self.next_offsets.items())},
            "ranges": {str(p): {"from": a, "to": b} for p, (a, b) in sorted(self.ranges.items())},
        }


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    found = (await await_partitions(consumer, [topic]))[topic]
    if not found:
        raise DlqError(f"topic {topic!r} not found")
    return found


async def read_dead_letters(
    kafka: KafkaSettings, topic: str, selection: Selection, stats: ReadStats
) -> AsyncIterator[DeadLetter]:
    """The dead letters of ``topic`` the selection matches, in offset order per partition."""
    consumer = AIOKafkaConsumer(
        **kafka.aiokafka_kwargs(),  # type: ignore[arg-type]
        client_id=f"{kafka.client_id}-dlq-tools",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        found = await _partitions(consumer, topic)
        unknown = sorted(selection.partitions - found)
        if unknown:
            raise DlqError(f"{topic!r} has no partition {unknown[0]} (it has 0..{max(found)})")
        tps = [TopicPartition(topic, p) for p in sorted(selection.partitions or found)]
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        at_time: dict[TopicPartition, Any] = {}
        if selection.since_ms is not None:
            at_time = await consumer.offsets_for_times({tp: int(selection.since_ms) for tp in tps})
        active: dict[TopicPartition, int] = {}  # -> stop offset (exclusive)
        for tp in tps:
            start, stop = begins[tp], ends[tp]
            if selection.from_offset is not None:
                start = max(start, selection.from_offset)
            if selection.since_ms is not None:
                found_at = at_time.get(tp)
                start = max(start, found_at.offset if found_at is not None else stop)
            if selection.to_offset is not None:
                stop = min(stop, selection.to_offset + 1)
            stats.ranges[tp.partition] = (start, max(start, stop))
            stats.next_offsets[tp.partition] = start
            if start < stop:
                active[tp] = stop
        consumer.assign(list(active))
        for tp in active:
            consumer.seek(tp, stats.ranges[tp.partition][0])
        while active:
            if stats.read >= selection.max_records:
                stats.truncated = True
                break
            batch = await consumer.getmany(
                *active, timeout_ms=500, max_records=min(1000, selection.max_records - stats.read)
            )
            for tp, records in batch.items():
                stop = active.get(tp)
                if stop is None:
                    continue
                for record in records:
                    if record.offset >= stop or stats.read >= selection.max_records:
                        break
                    stats.read += 1
                    stats.next_offsets[tp.partition] = record.offset + 1
                    letter = DeadLetter.parse(
                        tp.partition, record.offset, record.timestamp, record.key, record.value
                    )
                    if selection.matches(letter):
                        stats.matched += 1
                        yield letter
            for tp in list(active):
                # Offsets Kafka skips (transaction markers) move the position without a record.
                position = await consumer.position(tp)
                if position >= active[tp]:
                    stats.next_offsets[tp.partition] = active.pop(tp)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()


# -- inspect -------------------------------------------------------------------------------------
class _Bounded(Counter[str]):
    """Counts at most ``limit`` distinct keys; the rest are summed in ``other``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.other = 0

    def add(self, key: str) -> None:
        if key in self or len(self) < self.limit:
            self[key] += 1
        else:
            self.other += 1


@dataclass
class InspectReport:
    topic: str
    max_keys: int
    samples_per_reason: int
    # Reasons are strings of the topic's data, written by any producer: bounded like hubs.
    max_reasons: int = 100
    stats: ReadStats = field(default_factory=ReadStats)
    by_reason: _Bounded = field(init=False)
    by_field: _Bounded = field(init=False)
    by_hub: _Bounded = field(init=False)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # keys: those of by_reason
    other_samples: list[dict[str, Any]] = field(default_factory=list)  # of reasons over max_reasons

    def __post_init__(self) -> None:
        self.by_reason = _Bounded(self.max_reasons)
        self.by_field = _Bounded(self.max_keys)
        self.by_hub = _Bounded(self.max_keys)

    def add(self, letter: DeadLetter) -> None:
        reason = letter.reason
        self.by_reason.add(reason)
        for name in dict.fromkeys(letter.fields):
            self.by_field.add(name)
        self.by_hub.add(letter.hub or "(none)")
        kept = self.samples.setdefault(reason, []) if reason in self.by_reason else self.other_samples
        if len(kept) < self.samples_per_reason:
            kept.append(letter.sample())

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            **self.stats.as_dict(),
            "byReason": dict(self.by_reason.most_common()),
            "otherReasons": self.by_reason.other,
            "byField": dict(self.by_field.most_common()),
            "otherFields": self.by_field.other,
            "byHub": dict(self.by_hub.most_common()),
            "otherHubs": self.by_hub.other,
            "samples": {reason: self.samples[reason] for reason in sorted(self.samples)},
            "otherReasonSamples": self.other_samples,
        }


async def inspect(
    kafka: KafkaSettings, topic: str, selection: Selection, settings: DlqToolSettings
) -> InspectReport:
    report = InspectReport(topic, settings.max_keys, settings.samples, settings.max_reasons)
    async for letter in read_dead_letters(kafka, topic, selection, report.stats):
        report.add(letter)
    return report


# -- redrive -------------------------------------------------------------------------------------
@dataclass
class RedriveReport:
    topic: str
    target: str
    dry_run: bool
    stats: ReadStats = field(default_factory=ReadStats)
    redriven: int = 0  # sent (or, with dry_run, that would be)
    still_failing: int = 0
    still_failing_by_reason: Counter[str] = field(default_factory=Counter)
    unrecoverable: int = 0  # payload cut (payloadTruncated) or not a dead letter: nothing to send
    in_flight_waits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "target": self.target,
            "dryRun": self.dry_run,
            **self.stats.as_dict(),
            "redriven": self.redriven,
            "stillFailing": self.still_failing,
            "stillFailingByReason": dict(self.still_failing_by_reason.most_common()),
            "unrecoverable": self.unrecoverable,
            "inFlightWaits": self.in_flight_waits,
        }


def still_fails(payload: bytes, record_ms: float, event_time: EventTimeSettings) -> str | None:
    """The reason the worker would dead-letter ``payload`` sent at ``record_ms`` again, else None."""
    decoded = decode_events(payload)
    screen_event_times(decoded, record_ms, *event_time.window_ms())
    if decoded.invalid:
        return decoded.invalid[0].error.reason
    return None


async def redrive(
    kafka: KafkaSettings,
    topic: str,
    target: str,
    selection: Selection,
    settings: DlqToolSettings,
    *,
    dry_run: bool = False,
    event_time: EventTimeSettings | None = None,
) -> RedriveReport:
    report = RedriveReport(topic, target, dry_run)
    event_time = event_time or EventTimeSettings()
    producer: AIOKafkaProducer | None = None
    if not dry_run:
        producer = AIOKafkaProducer(
            **kafka.aiokafka_kwargs(),  # type: ignore[arg-type]
            client_id=f"{kafka.client_id}-dlq-redrive",
            acks="all",
            linger_ms=10,
        )
        await producer.start()
    pending: deque[asyncio.Future[Any]] = deque()
    try:
        async for letter in read_dead_letters(kafka, topic, selection, report.stats):
            payload = letter.payload()
            if payload is None:
                report.unrecoverable += 1
                continue
            reason = still_fails(payload, time.time() * 1000.0, event_time)
            if reason is not None:
                report.still_failing += 1
                report.still_failing_by_reason[reason] += 1
                continue
            report.redriven += 1
            if producer is None:
                continue
            headers = [(REDRIVE_HEADER, f"{topic}/{letter.partition}/{letter.offset}".encode())]
            src = letter.source
            if src:
                headers.append(
                    (SOURCE_HEADER, f"{src.get('topic')}/{src.get('partition')}/{src.get('offset')}".encode())
                )
            pending.append(await producer.send(target, payload, key=letter.key, headers=headers))
            if len(pending) > settings.max_in_flight:
                report.in_flight_waits += 1
                while len(pending) > settings.max_in_flight // 2:
                    await pending.popleft()
        while pending:
            await pending.popleft()
    finally:
        for future in pending:
            future.cancel()
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
    return report
