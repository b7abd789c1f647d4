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
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from contest_telemetry.schema import (
    ContestEventBase,
    arming_duration_ms,
    as_ms,
    encode,
    encode_envelope,
    resolution_durations,
)
from contest_telemetry.settings import KafkaSettings, TopicSettings
from producers.exceptions import PublisherClosedError
from producers.metrics import PublisherMetrics
from producers.settings import PublisherSettings

__all__ = ["ContestPublisher", "iso_timestamp"]

log = logging.getLogger(__name__)
_P = "telemetry.contest."


def iso_timestamp(ms: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a ``Z``, as the hub's logger writes it."""
    moment = datetime.now(UTC) if ms is None else datetime.fromtimestamp(ms / 1000.0, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.settings = settings or PublisherSettings()
        self.topic = topic or TopicSettings().events
        self.metrics = PublisherMetrics(registry)
        self.idempotent = False
        self._buffer: collections.deque[dict[str, Any]] = collections.deque()
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
        """Buffer one contract event; True when accepted, False when dropped (overflow='drop')."""
        payload = event.to_wire() if isinstance(event, ContestEventBase) else event
        if not self._open:
            raise PublisherClosedError("publisher is not running (start() it, and record before close())")
        if len(self._buffer) >= self.settings.buffer_size:
            if self.settings.overflow == "drop":
                self.metrics.dropped += 1
                self._dropped_by_hub[payload.get("hubId") or ""] += 1
                return False
            while len(self._buffer) >= self.settings.buffer_size:
                self._room.clear()
                self._wakeup.set()
                await self._room.wait()
                if not self._open:
                    raise PublisherClosedError("publisher closed while waiting for buffer room")
        if "eventId" not in payload:
            self._seq += 1
            payload["eventId"] = f"{self._id}-{self._seq}"
        self._buffer.append(payload)
        self.metrics.enqueued += 1
        if len(self._buffer) >= self.settings.max_envelope_events:
            self._wakeup.set()
        return True

    @staticmethod
    def _base(
        message: str,
        hub_id: str,
        room_id: str | None,
        contest_key: str,
        at_ms: float | None,
        level: str = "info",
    ) -> dict[str, Any]:
        return {
            "message": _P + message,
            "timestamp": iso_timestamp(at_ms),
            "level": level,
            "schemaVersion": 1,
            "hubId": hub_id,
            "roomId": room_id,
            "contestKey": contest_key,
        }

    @staticmethod
    def _raw_times(event: dict[str, Any], **times: Any) -> None:
        for key, value in times.items():
            if value is not None:
                event[key] = value

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
        event = self._base("armed", hub_id, room_id, contest_key, at_ms)
        event.update(
            participantCount=participant_count,
            participantCapacity=participant_capacity,
            windowMs=_window_ms(created_at, expires_at),
            label=label,
            move=move,
            type=type,
        )
        self._raw_times(
            event,
            createdAt=created_at,
            expiresAt=expires_at,
            moderationTags=moderation_tags,
            sharedComplicationTags=shared_complication_tags,
        )
        event.update(extra)
        return await self.publish(event)

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
        event = self._base("launched", hub_id, room_id, contest_key, at_ms)
        event.update(
            contestId=contest_id,
            participantCount=participant_count,
            participantCapacity=participant_capacity,
            armingDurationMs=arming_duration_ms(created_at, started_at),
            label=label,
            move=move,
            type=type,
        )
        self._raw_times(
            event,
            createdAt=created_at,
            startedAt=started_at,
            moderationTags=moderation_tags,
            sharedComplicationTags=shared_complication_tags,
        )
        event.update(extra)
        return await self.publish(event)

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
        event = self._base("workflowStarted", hub_id, room_id, contest_key, at_ms)
        event.update(contestId=contest_id, workflowId=workflow_id, runId=run_id)
        event.update(extra)
        return await self.publish(event)

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
        event = self._base("workflowFailed", hub_id, room_id, contest_key, at_ms, level="error")
        event.update(contestId=contest_id, error=error or "workflow_failed")
        event.update(extra)
        return await self.publish(event)

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
        event = self._base("resolved", hub_id, room_id, contest_key, at_ms)
        event.update(
            contestId=contest_id,
            participantCount=participant_count,
            participantCapacity=participant_capacity,
            outcomeTier=outcome_tier,
            sharedComplicationCount=shared_complication_count,
            armingDurationMs=arming,
            resolutionDurationMs=resolution,
        )
        self._raw_times(
            event,
            createdAt=created_at,
            startedAt=started_at,
            resolvedAt=resolved_at,
            moderationTags=moderation_tags,
            sharedComplicationTags=shared_complication_tags,
        )
        event.update(extra)
        return await self.publish(event)

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
        event = self._base("expired", hub_id, room_id, contest_key, at_ms)
        event.update(
            participantCount=participant_count,
            participantCapacity=participant_capacity,
            label=label,
            move=move,
            type=type,
            expiredAt=expired_at,
            windowMs=_window_ms(created_at, expires_at),
            armingDurationMs=_window_ms(created_at, expired_at),
        )
        self._raw_times(event, createdAt=created_at, expiresAt=expires_at)
        event.update(extra)
        return await self.publish(event)

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
        batch = list(self._buffer)
        self._buffer.clear()
        self._room.set()
        if not batch:
            return
        self._inflight += len(batch)
        if self.settings.batching == "single":
            for event in batch:
                await self._send(event.get("hubId") or "", [event], 0)
        else:
            by_hub: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
            for event in batch:
                by_hub[event.get("hubId") or ""].append(event)
            size = self.settings.max_envelope_events
            for hub, events in by_hub.items():
                dropped = self._dropped_by_hub.pop(hub, 0)
                for i in range(0, len(events), size):
                    await self._send(hub, events[i : i + size], dropped if i == 0 else 0)
        self.metrics.sync(len(self._buffer))

    async def _send(self, hub: str, events: list[dict[str, Any]], dropped: int) -> None:
        """Queue one record; every failure is settled here so ``flush()`` never waits forever."""
        assert self._producer is not None
        count = len(events)
        try:
            if self.settings.batching == "single":
                value = encode(events[0])
            else:
                value = encode_envelope(hub, events, dropped)
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
