"""The publisher's sender: a background task that drains the buffer into Kafka records.

Each round takes every buffered event. ``batching="envelope"`` groups them by hub into envelopes
of at most ``max_envelope_events`` events and ``max_record_bytes`` bytes (a hub's dropped count
travels in its first); ``"single"`` sends one record per event. Records are keyed by hub. A round
waits up to ``linger_ms`` for an envelope to fill, unless one is full, a caller waits for room or
the publisher is closing. A record that cannot be queued or delivered is counted (``failed``) and
logged; the sender goes on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaProducer

from producers.buffer import EventBuffer
from producers.encoding import envelope_header, envelope_size, pack_envelope
from producers.metrics import PublisherMetrics
from producers.settings import PublisherSettings

__all__ = ["Sender"]

log = logging.getLogger(__name__)


class Sender:
    """Sends what ``buffer`` holds with ``producer`` (started) to ``topic``; :meth:`start` the task."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        buffer: EventBuffer,
        settings: PublisherSettings,
        topic: str,
        metrics: PublisherMetrics,
    ) -> None:
        self.producer = producer
        self.buffer = buffer
        self.settings = settings
        self.topic = topic
        self.metrics = metrics
        self.closing = False
        """Set when the publisher closes: send at once, never linger."""
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Future[Any]] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="contest-publisher-sender")

    async def stop(self) -> None:
        """Cancel the task (after :meth:`flush`, nothing is left to send)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def flush(self) -> None:
        """Wait until everything buffered so far is acknowledged (or failed and counted)."""
        buffer = self.buffer
        while buffer or buffer.inflight:
            buffer.ready.set()
            if self._pending:
                await self.producer.flush()
                if self._pending:
                    await asyncio.wait(set(self._pending))
            else:
                await asyncio.sleep(0.001)

    async def _run(self) -> None:
        linger = self.settings.linger_ms / 1000.0
        buffer, ready = self.buffer, self.buffer.ready
        while True:
            if not buffer:
                ready.clear()
                await ready.wait()
            elif linger and len(buffer) < self.settings.max_envelope_events and not self.closing:
                ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ready.wait(), linger)
            try:
                await self._send_buffered()
            except asyncio.CancelledError:
                raise
            except Exception:  # a send that cannot even be queued: counted and logged, sender goes on
                log.exception("contest publisher: sending a batch failed")

    async def _send_buffered(self) -> None:
        hubs, encoded = self.buffer.drain()
        if not encoded:
            return
        handed = 0  # events given to _send, which settles each of them whatever happens
        try:
            if self.settings.batching == "single":
                for hub, data in zip(hubs, encoded, strict=True):
                    handed += 1
                    await self._send(hub, data, 1)
            else:
                by_hub: dict[str, list[bytes]] = collections.defaultdict(list)
                for hub, data in zip(hubs, encoded, strict=True):
                    by_hub[hub].append(data)
                for hub, blobs in by_hub.items():
                    dropped = self.buffer.take_dropped(hub)
                    for value, count in self._envelopes(hub, blobs, dropped):
                        handed += count
                        await self._send(hub, value, count)
        finally:
            rest = len(encoded) - handed
            if rest:  # never reached the producer (cancelled, or packing failed): room comes back
                self.metrics.failed += rest
                self.buffer.settled(rest)
        self.metrics.sync(len(self.buffer), self.buffer.inflight)

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
        """Queue one record of ``count`` events; every failure is settled here so :meth:`flush`
        never waits forever."""
        try:
            future = await self.producer.send(self.topic, value, key=hub.encode())
        except asyncio.CancelledError:
            self.buffer.settled(count)
            raise
        except Exception:
            self.metrics.failed += count
            self.buffer.settled(count)
            log.exception("contest publisher: could not queue %d event(s) of hub %r", count, hub)
            return
        self._pending.add(future)
        future.add_done_callback(lambda f, n=count: self._delivered(f, n))

    def _delivered(self, future: asyncio.Future[Any], count: int) -> None:
        self._pending.discard(future)
        self.buffer.settled(count)
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
