"""``ContestPublisher``: the non-blocking contest event publisher that hub services embed.

``record_*`` mirror the hub's existing recorder: they take the raw lifecycle times, compute the
durations with the contract's rules, and put the event in a bounded buffer. A background task
drains the buffer into Kafka (keyed by ``hubId``), as envelopes per hub or as single events.
The caller never waits on the network; with ``overflow="wait"`` it waits only for buffer room.

Split the way aiokafka splits its producer: this class is the caller's side (record, check and
encode, buffer, flush, close); ``recorders`` the six events it builds; ``buffer`` the bounded
buffer (the accumulator); ``sender`` the task that sends it; ``client`` the aiokafka producer
and its idempotence probe.
"""

from __future__ import annotations

import os
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from contest_telemetry.schema import (
    ContestEventBase,
    FieldError,
    arming_duration_ms,
    iso_stamp,
    resolution_durations,
)
from contest_telemetry.schema import ms_to_iso as iso_timestamp
from contest_telemetry.settings import KafkaSettings, TopicSettings
from producers.buffer import EventBuffer
from producers.client import start_producer
from producers.encoding import EventEncoder
from producers.exceptions import InvalidEventError, PublisherClosedError
from producers.metrics import PublisherMetrics
from producers.recorders import (
    ARMED_EVENT,
    EXPIRED_EVENT,
    LAUNCHED_EVENT,
    RESOLVED_EVENT,
    WORKFLOW_FAILED_EVENT,
    WORKFLOW_STARTED_EVENT,
)
from producers.sender import Sender
from producers.settings import PublisherSettings
from streams.settings import EventTimeSettings

__all__ = ["ContestPublisher", "iso_timestamp"]

_DEFAULT_ERROR: str = WORKFLOW_FAILED_EVENT.model.model_fields["error"].default


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
        self._buffer = EventBuffer(self.settings.buffer_size, self.settings.max_envelope_events)
        self._producer: AIOKafkaProducer | None = None
        self._sender: Sender | None = None
        self._open = False
        self._id = os.urandom(6).hex()
        self._seq = 0

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> ContestPublisher:
        self._producer, self.idempotent = await start_producer(self.kafka, self.settings)
        self._open = True
        self._sender = Sender(self._producer, self._buffer, self.settings, self.topic, self.metrics)
        self._sender.start()
        return self

    async def __aenter__(self) -> ContestPublisher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self) -> None:
        """Wait until everything recorded so far is acknowledged (or failed and counted)."""
        if self._sender is not None:
            await self._sender.flush()
        self.metrics.sync(len(self._buffer), self._buffer.inflight)

    async def close(self) -> None:
        """Stop accepting events, deliver every buffered one, then stop the producer."""
        if not self._open and self._producer is None:
            return
        self._open = False
        if self._sender is not None:
            self._sender.closing = True
        try:
            await self.flush()
        finally:
            if self._sender is not None:
                await self._sender.stop()
            if self._producer is not None:
                await self._producer.stop()
                self._producer = None
            self.metrics.sync(len(self._buffer), self._buffer.inflight)

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
        buffer = self._buffer
        if not buffer.add(hub, data):
            if self.settings.overflow == "drop":
                self.metrics.dropped += 1
                buffer.drop(hub)
                return False
            while True:
                await buffer.wait_for_room()
                if not self._open:
                    raise PublisherClosedError("publisher closed while waiting for buffer room")
                if buffer.add(hub, data):
                    break
        self.metrics.enqueued += 1
        return True

    def _timestamp(self, message: str, at_ms: float | None) -> str:
        """``timestamp`` of an event recorded at ``at_ms`` (None: now); InvalidEventError naming
        ``at_ms`` when it is not a time in years 1-9999."""
        try:
            timestamp, t_ms = iso_stamp(at_ms)
        except (ValueError, OverflowError, OSError, TypeError):
            error = FieldError("at_ms", f"must be epoch ms in years 1-9999 UTC, got {at_ms!r}")
            raise InvalidEventError(f"{message}: {error}", [error]) from None
        self._encoder.stamp = (timestamp, t_ms)  # a timestamp made here needs no parsing again
        return timestamp

    # Each record_* passes its values in the order of its shape's fields (producers/recorders.py).
    # windowMs follows the arming rule, max(0, end - start) of two raw times.
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
        shape = ARMED_EVENT
        return await self.publish(
            shape.event(
                self._timestamp(shape.message, at_ms),
                extra,
                hub_id,
                room_id,
                contest_key,
                participant_count,
                participant_capacity,
                arming_duration_ms(created_at, expires_at),
                label,
                move,
                type,
                created_at,
                expires_at,
                moderation_tags,
                shared_complication_tags,
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
        shape = LAUNCHED_EVENT
        return await self.publish(
            shape.event(
                self._timestamp(shape.message, at_ms),
                extra,
                hub_id,
                room_id,
                contest_key,
                contest_id,
                participant_count,
                participant_capacity,
                arming_duration_ms(created_at, started_at),
                label,
                move,
                type,
                created_at,
                started_at,
                moderation_tags,
                shared_complication_tags,
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
        shape = WORKFLOW_STARTED_EVENT
        timestamp = self._timestamp(shape.message, at_ms)
        return await self.publish(
            shape.event(timestamp, extra, hub_id, room_id, contest_key, contest_id, workflow_id, run_id)
        )

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
        shape = WORKFLOW_FAILED_EVENT
        timestamp = self._timestamp(shape.message, at_ms)
        return await self.publish(
            shape.event(timestamp, extra, hub_id, room_id, contest_key, contest_id, error or _DEFAULT_ERROR)
        )

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
        shape = RESOLVED_EVENT
        return await self.publish(
            shape.event(
                self._timestamp(shape.message, at_ms),
                extra,
                hub_id,
                room_id,
                contest_key,
                contest_id,
                participant_count,
                participant_capacity,
                outcome_tier,
                shared_complication_count,
                arming,
                resolution,
                created_at,
                started_at,
                resolved_at,
                moderation_tags,
                shared_complication_tags,
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
        shape = EXPIRED_EVENT
        return await self.publish(
            shape.event(
                self._timestamp(shape.message, at_ms),
                extra,
                hub_id,
                room_id,
                contest_key,
                participant_count,
                participant_capacity,
                label,
                move,
                type,
                expired_at,
                arming_duration_ms(created_at, expires_at),
                arming_duration_ms(created_at, expired_at),
                created_at,
                expires_at,
            )
        )
