"""``ContestPublisher``: the non-blocking contest event publisher that hub services embed.

``record_*`` mirror the hub's existing recorder: they take the raw lifecycle times, compute the
durations with the contract's rules, and put the event in a bounded buffer. A background task
drains the buffer into Kafka (keyed by ``hubId``), as envelopes per hub or as single events.
The caller never waits on the network; with ``overflow="wait"`` it waits only for buffer room.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from contest_telemetry.schema import (
    ContestEventBase,
    FieldError,
    arming_duration_ms,
    as_ms,
    resolution_durations,
)
from contest_telemetry.settings import KafkaSettings, TopicSettings
from producers.encoding import EventEncoder, envelope_header, envelope_size, pack_envelope
from producers.exceptions import InvalidEventError, PublisherClosedError
from producers.metrics import PublisherMetrics
from producers.settings import PublisherSettings
from streams.settings import EventTimeSettings

__all__ = ["ContestPublisher", "iso_timestamp"]

log = logging.getLogger(__name__)
_P = "telemetry.contest."
_ARMED, _LAUNCHED, _RESOLVED, _EXPIRED = (_P + m for m in ("armed", "launched", "resolved", "expired"))
_WORKFLOW_STARTED, _WORKFLOW_FAILED = _P + "workflowStarted", _P + "workflowFailed"


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")
"""The last whole second formatted: (epoch s, its ISO-8601 text up to the seconds)."""


def _stamp(ms: float | None) -> tuple[str, float]:
    """:func:`iso_timestamp` and the epoch ms it shows."""
    global _second
    if ms is None:
        sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    else:
        # datetime.fromtimestamp's rounding: microseconds half to even.
        frac, whole = math.modf(ms / 1000.0)
        us = round(frac * 1e6)  # ValueError for NaN
        sec = int(whole)  # OverflowError for inf
        if us >= 1_000_000:
            sec, us = sec + 1, us - 1_000_000
        elif us < 0:
            sec, us = sec - 1, us + 1_000_000
    cached, text = _second
    if sec != cached:
        text = datetime.fromtimestamp(sec, UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        _second = (sec, text)
    millis = us // 1000
    return f"{text}.{millis:03d}Z", sec * 1000.0 + millis


def iso_timestamp(ms: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as the hub's logger writes it.

    The text is ``datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")``
    (microseconds rounded half to even, then cut to milliseconds), but the date and time of day are
    formatted once per second: this is on every ``record_*`` call. ValueError, OverflowError or
    OSError when ``ms`` is not a finite time in years 1-9999.
    """
    return _stamp(ms)[0]


@contextlib.contextmanager
def _quiet_probe() -> Iterator[None]:
    """aiokafka logs a refused InitProducerId at ERROR; with idempotence='auto' a refusal is an
    expected answer (we fall back and warn once), not an error."""
    sender = logging.getLogger("aiokafka.producer.sender")
    previous = sender.level
    sender.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        sender.setLevel(previous)


def _finish(event: dict[str, Any], optional: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``event`` with the ``optional`` fields that have a value (the wire leaves the others out),
    then the caller's extra fields."""
    for key, value in optional.items():
        if value is not None:
            event[key] = value
    if extra:
        event.update(extra)
    return event


def _window_ms(start: Any, end: Any) -> float | int | None:
    a, b = as_ms(start), as_ms(end)
    return None if a is None or b is None else max(0, b - a)


class ContestPublisher:
    """Publish contest lifecycle events; use as ``async with ContestPublisher(...) as pub``."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        settings: PublisherSettings | None = None,
        topic: str | None = None,
        registry: CollectorRegistry | None = None,
        event_time: EventTimeSettings | None = None,
    ) -> None:
        """``event_time``: the pipeline's event-time bounds (``CT_EVENT_TIME_*``); an event whose
        ``timestamp`` is beyond them from now is refused when recorded (the pipeline would
        dead-letter it)."""
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or PublisherSettings()
        self.topic = topic or TopicSettings().events
        self.metrics = PublisherMetrics(registry)
        self.idempotent = False
        future_ms, past_ms = (event_time or EventTimeSettings()).window_ms()
        self._encoder = EventEncoder(self.settings.max_record_bytes, future_ms, past_ms)
        # The events buffered, as given (read by benchmarks/publish.py), and in lockstep their hub
        # and JSON bytes: events are checked and encoded when recorded, the sender joins bytes.
        # (Three deques, no tuple per event: fewer objects for the garbage collector to track.)
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
        self._hubs: collections.deque[str] = collections.deque()
        self._encoded: collections.deque[bytes] = collections.deque()
        self._dropped_by_hub: dict[str, int] = collections.defaultdict(int)
        self._producer: AIOKafkaProducer | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._pending: set[asyncio.Future[Any]] = set()
        # Events taken from the buffer whose delivery is not settled yet (sent or failed).
        self._inflight = 0
        self._open = False
        self._id = os.urandom(6).hex()
        self._seq = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def _producer_kwargs(self, idempotent: bool) -> dict[str, Any]:
        s = self.settings
        acks: int | str = "all" if s.acks == "all" else int(s.acks)
        kwargs: dict[str, Any] = {
            **self.kafka.aiokafka_kwargs(),
            "client_id": self.kafka.client_id,
            "acks": acks,
            "enable_idempotence": idempotent,
            # Our own linger already batches events into envelopes; the client's linger only
            # needs to gather the envelopes of one flush into one request.
            "linger_ms": min(s.linger_ms, 5),
            "request_timeout_ms": s.request_timeout_ms,
            "max_batch_size": 1024 * 1024,
            "max_request_size": 4 * 1024 * 1024,
        }
        if s.compression != "none":
            kwargs["compression_type"] = s.compression
        return kwargs

    async def start(self) -> ContestPublisher:
        mode = self.settings.idempotence
        want = mode in ("auto", "on") and self.settings.acks == "all"
        producer = AIOKafkaProducer(**self._producer_kwargs(want))
        try:
            with _quiet_probe() if mode == "auto" else contextlib.nullcontext():
                await producer.start()
            self.idempotent = want
        except Exception:
            await producer.stop()
            if mode != "auto" or not want:
                raise
            # Brokers such as Tansu refuse InitProducerId; fall back to acks=all without ids.
            log.warning("broker refused an idempotent producer; publishing with acks=all, not idempotent")
            producer = AIOKafkaProducer(**self._producer_kwargs(False))
            await producer.start()
        self._producer = producer
        self._open = True
        self._room.set()
        self._sender = asyncio.create_task(self._run_sender(), name="contest-publisher-sender")
        return self

    async def __aenter__(self) -> ContestPublisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self) -> None:
        """Wait until everything recorded so far is acknowledged (or failed and counted)."""
        while self._buffer or self._inflight:
            self._wakeup.set()
            if self._pending:
                if self._producer is not None:
                    await self._producer.flush()
                if self._pending:
                    await asyncio.wait(set(self._pending))
            else:
                await asyncio.sleep(0.001)
        self.metrics.sync(len(self._buffer))

    async def close(self) -> None:
        """Stop accepting events, deliver every buffered one, then stop the producer."""
        if not self._open and self._producer is None:
            return
        self._open = False
        try:
            await self.flush()
        finally:
            if self._sender is not None:
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
            self.metrics.sync(len(self._buffer))

    def stats(self) -> dict[str, int]:
        return {**self.metrics.as_dict(), "buffered": len(self._buffer)}

    # -- the caller's side ----------------------------------------------------------------------
    async def publish(self, event: dict[str, Any] | ContestEventBase) -> bool:
        """Buffer one contract event; True when accepted, False when dropped (overflow='drop').

        The event is checked and encoded here: one the pipeline would not take (the schema's
        rules, a value JSON cannot hold, larger than a record, a ``timestamp`` beyond the
        event-time bounds) raises :class:`~producers.exceptions.InvalidEventError` naming the field
        and why, and nothing is buffered. A dict without ``eventId`` gets one (not when it is refused).
        """
        payload = event.to_wire() if isinstance(event, ContestEventBase) else event
        if not self._open:
            raise PublisherClosedError("publisher is not running (start() it, and record before close())")
        added = False
        if isinstance(payload, dict) and "eventId" not in payload:
            self._seq += 1
            payload["eventId"] = f"{self._id}-{self._seq}"
            added = True
        try:
            hub, data = self._encoder.encode(payload)
        except InvalidEventError:
            if added:
                del payload["eventId"]
            self.metrics.rejected += 1
            raise
        if len(self._buffer) >= self.settings.buffer_size:
            if self.settings.overflow == "drop":
                self.metrics.dropped += 1
                self._dropped_by_hub[hub] += 1
                return False
            while len(self._buffer) >= self.settings.buffer_size:
                self._room.clear()
                self._wakeup.set()
                await self._room.wait()
                if not self._open:
                    raise PublisherClosedError("publisher closed while waiting for buffer room")
        self._buffer.append(payload)
        self._hubs.append(hub)
        self._encoded.append(data)
        self.metrics.enqueued += 1
        if len(self._buffer) >= self.settings.max_envelope_events:
            self._wakeup.set()
        return True

    def _timestamp(self, message: str, at_ms: float | None) -> str:
        """``timestamp`` of an event recorded at ``at_ms`` (None: now); InvalidEventError naming
        ``at_ms`` when it is not a time in years 1-9999."""
        try:
            timestamp, t_ms = _stamp(at_ms)
        except (ValueError, OverflowError, OSError, TypeError):
            error = FieldError("at_ms", f"must be epoch ms in years 1-9999 UTC, got {at_ms!r}")
            raise InvalidEventError(f"{message}: {error}", [error]) from None
        self._encoder.stamp = (timestamp, t_ms)  # a timestamp made here needs no parsing again
        return timestamp

    # Each record_* builds its event in one literal (the field order hubs log), then adds the raw
    # times it has and the extra fields: this is the caller's cost, so no helper calls.
    async def record_armed(
        self,
        *,
        hub_id: str,
        room_id: str | None,
        contest_key: str,
        participant_count: int = 1,
        participant_capacity: int | None = None,
        created_at: float | None = None,
        expires_at: float | None = None,
        label: str | None = None,
        move: str | None = None,
        type: str | None = None,
        moderation_tags: list[str] | None = None,
        shared_complication_tags: list[str] | None = None,
        at_ms: float | None = None,
        **extra: Any,
    ) -> bool:
        event = {
            "message": _ARMED,
            "timestamp": self._timestamp(_ARMED, at_ms),
            "level": "info",
            "schemaVersion": 1,
            "hubId": hub_id,
            "roomId": room_id,
            "contestKey": contest_key,
            "participantCount": participant_count,
            "participantCapacity": participant_capacity,
            "windowMs": _window_ms(created_at, expires_at),
            "label": label,
            "move": move,
            "type": type,
        }
        return await self.publish(
            _finish(
                event,
                {
                    "createdAt": created_at,
                    "expiresAt": expires_at,
                    "moderationTags": moderation_tags,
                    "sharedComplicationTags": shared_complication_tags,
                },
                extra,
            )
        )

    async def record_launched(
        self,
        *,
        hub_id: str,
        room_id: str | None,
        contest_id: str,
        contest_key: str,
        participant_count: int | None = None,
        participant_capacity: int | None = None,
        created_at: float | None = None,
        started_at: float | None = None,
        label: str | None = None,
        move: str | None = None,
        type: str | None = None,
        moderation_tags: list[str] | None = None,
        shared_complication_tags: list[str] | None = None,
        at_ms: float | None = None,
        **extra: Any,
    ) -> bool:
        event = {
            "message": _LAUNCHED,
            "timestamp": self._timestamp(_LAUNCHED, at_ms),
            "level": "info",
            "schemaVersion": 1,
            "hubId": hub_id,
            "roomId": room_id,
            "contestKey": contest_key,
            "contestId": contest_id,
            "participantCount": participant_count,
            "participantCapacity": participant_capacity,
            "armingDurationMs": arming_duration_ms(created_at, started_at),
            "label": label,
            "move": move,
            "type": type,
        }
        return await self.publish(
            _finish(
                event,
                {
                    "createdAt": created_at,
                    "startedAt": started_at,
                    "moderationTags": moderation_tags,
                    "sharedComplicationTags": shared_complication_tags,
                },
                extra,
            )
        )

    async def record_workflow_started(
        self,
        *,
        hub_id: str,
        room_id: str | None,
        contest_id: str,
        contest_key: str,
        workflow_id: str | None,
        run_id: str | None = None,
        at_ms: float | None = None,
        **extra: Any,
    ) -> bool:
        event = {
            "message": _WORKFLOW_STARTED,
            "timestamp": self._timestamp(_WORKFLOW_STARTED, at_ms),
            "level": "info",
            "schemaVersion": 1,
            "hubId": hub_id,
            "roomId": room_id,
            "contestKey": contest_key,
            "contestId": contest_id,
            "workflowId": workflow_id,
            "runId": run_id,
        }
        return await self.publish(_finish(event, {}, extra))

    async def record_workflow_failed(
        self,
        *,
        hub_id: str,
        room_id: str | None,
        contest_id: str,
        contest_key: str,
        error: str | None = None,
        at_ms: float | None = None,
        **extra: Any,
    ) -> bool:
        event = {
            "message": _WORKFLOW_FAILED,
            "timestamp": self._timestamp(_WORKFLOW_FAILED, at_ms),
            "level": "error",
            "schemaVersion": 1,
            "hubId": hub_id,
            "roomId": room_id,
            "contestKey": contest_key,
            "contestId": contest_id,
            "error": error or "workflow_failed",
        }
        return await self.publish(_finish(event, {}, extra))

    async def record_resolved(
        self,
        *,
        hub_id: str,
        room_id: str | None,
        contest_id: str,
        contest_key: str,
        participant_count: int | None = None,
        participant_capacity: int | None = None,
        outcome_tier: str | None = None,
        shared_complication_count: int = 0,
        created_at: float | None = None,
        started_at: float | None = None,
        resolved_at: float | None = None,
        moderation_tags: list[str] | None = None,
        shared_complication_tags: list[str] | None = None,
        at_ms: float | None = None,
        **extra: Any,
    ) -> bool:
        arming, resolution = resolution_durations(created_at, started_at, resolved_at)
        event = {
            "message": _RESOLVED,
            "timestamp": self._timestamp(_RESOLVED, at_ms),
            "level": "info",
            "schemaVersion": 1,
            "hubId": hub_id,
            "roomId": room_id,
            "contestKey": contest_key,
            "contestId": contest_id,
            "participantCount": participant_count,
            "participantCapacity": participant_capacity,
            "outcomeTier": outcome_tier,
            "sharedComplicationCount": shared_complication_count,
            "armingDurationMs": arming,
            "resolutionDurationMs": resolution,
        }
        return await self.publish(
            _finish(
                event,
                {
                    "createdAt": created_at,
                    "startedAt": started_at,
                    "resolvedAt": resolved_at,
                    "moderationTags": moderation_tags,
                    "sharedComplicationTags": shared_complication_tags,
                },
                extra,
            )
        )

    async def record_expired(
        self,
        *,
        hub_id: str,
        room_id: str | None,
        contest_key: str,
        participant_count: int | None = None,
        participant_capacity: int | None = None,
        label: str | None = None,
        move: str | None = None,
        type: str | None = None,
        created_at: float | None = None,
        expires_at: float | None = None,
        expired_at: float | None = None,
        at_ms: float | None = None,
        **extra: Any,
    ) -> bool:
        event = {
            "message": _EXPIRED,
            "timestamp": self._timestamp(_EXPIRED, at_ms),
            "level": "info",
            "schemaVersion": 1,
            "hubId": hub_id,
            "roomId": room_id,
            "contestKey": contest_key,
            "participantCount": participant_count,
            "participantCapacity": participant_capacity,
            "label": label,
            "move": move,
            "type": type,
            "expiredAt": expired_at,
            "windowMs": _window_ms(created_at, expires_at),
            "armingDurationMs": _window_ms(created_at, expired_at),
        }
        return await self.publish(_finish(event, {"createdAt": created_at, "expiresAt": expires_at}, extra))

    # -- the sender -----------------------------------------------------------------------------
    async def _run_sender(self) -> None:
        linger = self.settings.linger_ms / 1000.0
        while True:
            if not self._buffer:
                self._wakeup.clear()
                await self._wakeup.wait()
            elif linger and len(self._buffer) < self.settings.max_envelope_events and self._open:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), linger)
            try:
                await self._send_buffered()
            except asyncio.CancelledError:
                raise
            except Exception:  # a send that cannot even be queued: counted and logged, sender goes on
                log.exception("contest publisher: sending a batch failed")

    async def _send_buffered(self) -> None:
        assert self._producer is not None
        hubs, encoded = list(self._hubs), list(self._encoded)
        self._buffer.clear()
        self._hubs.clear()
        self._encoded.clear()
        self._room.set()
        if not encoded:
            return
        self._inflight += len(encoded)
        if self.settings.batching == "single":
            for hub, data in zip(hubs, encoded, strict=True):
                await self._send(hub, data, 1)
        else:
            by_hub: dict[str, list[bytes]] = collections.defaultdict(list)
            for hub, data in zip(hubs, encoded, strict=True):
                by_hub[hub].append(data)
            for hub, blobs in by_hub.items():
                dropped = self._dropped_by_hub.pop(hub, 0)
                for value, count in self._envelopes(hub, blobs, dropped):
                    await self._send(hub, value, count)
        self.metrics.sync(len(self._buffer))

    def _envelopes(self, hub: str, blobs: list[bytes], dropped: int) -> Iterator[tuple[bytes, int]]:
        """Envelopes of ``blobs`` (encoded events of ``hub``, in order) of at most
        ``max_envelope_events`` events and ``max_record_bytes`` bytes each, with their event
        counts; the hub's dropped count travels in the first."""
        header = envelope_header(hub)
        most, limit = self.settings.max_envelope_events, self.settings.max_record_bytes
        start, size = 0, 0
        for i, data in enumerate(blobs):
            count = i - start
            if count and (count >= most or envelope_size(header, size + len(data), count + 1) > limit):
                yield pack_envelope(header, blobs[start:i], dropped), count
                start, size, dropped = i, 0, 0
            size += len(data)
        yield pack_envelope(header, blobs[start:], dropped), len(blobs) - start

    async def _send(self, hub: str, value: bytes, count: int) -> None:
        """Queue one record of ``count`` events; every failure is settled here so ``flush()`` never
        waits forever."""
        assert self._producer is not None
        try:
            future = await self._producer.send(self.topic, value, key=hub.encode())
        except asyncio.CancelledError:
            self._inflight -= count
            raise
        except Exception:
            self.metrics.failed += count
            self._inflight -= count
            log.exception("contest publisher: could not queue %d event(s) of hub %r", count, hub)
            return
        self._pending.add(future)
        future.add_done_callback(lambda f, n=count: self._delivered(f, n))

    def _delivered(self, future: asyncio.Future[Any], count: int) -> None:
        self._pending.discard(future)
        self._inflight -= count
        if future.cancelled() or future.exception() is not None:
            self.metrics.failed += count
            log.error(
                "contest publisher: delivery of %d event(s) failed: %r",
                count,
                None if future.cancelled() else future.exception(),
            )
        else:
            self.metrics.sent += count
            self.metrics.records += 1
