"""Apply one record all or nothing: the engine's outputs, then its table writes.

:meth:`streams.processor.Engine.process` updates the engine's caches (applied offsets, watermark,
open contests) before the outputs are sent and the table written. If anything between the two
fails (a window result not acknowledged in time, a send refused, a table write raising), the
caches are ahead of the table; an agent that went on would never apply the record. So
:class:`RecordApplier` drops the caches on any failure (the table, holding a prefix of the
record's writes, is the truth, which streams/state.py is built to replay from), processes the
record again and retries, with a backoff, for up to ``retry_s`` (``CT_WORKER_APPLY_RETRY_S``:
a broker failing over, or faust's changelog metadata still missing right after a start); then it
raises :class:`~streams.exceptions.ApplyError` and the worker stops with a non-zero exit (faust
must not go on past the hole).

Dead letters and contest records are not awaited per record (a produce round trip per record
would cap the worker, see docs/known-issues.md); their delivery is watched instead: the first
that fails is kept in :attr:`RecordApplier.failure`, the next record raises ``ApplyError``, and
the producer flush faust runs before every offset commit raises too
(:func:`streams.faust_patches.check_outputs_before_commit`), so no offset is committed past an
output that was not stored.

Staged state (``CT_WORKER_STATE_FLUSH_S`` > 0, the default). The engine keeps what records change
in its caches and :meth:`RecordApplier.flush_state` writes each touched key once, after every
dead letter and contest record of those records was acknowledged: every
``state_flush_s`` seconds or ``state_flush_events`` events (checked after a record), and before
faust's producer flush, i.e. before every offset commit, rebalance and shutdown, so a committed
offset is never past the durable state (and when it is, after a crash, the worker reads the gap
again, see streams/reread.py). A flush never runs while a record is being applied (one lock): a
record's state reaches the changelog only after its window results were acknowledged. A failed
send is then retried as it is (the table was not touched); a record whose processing raises makes
the engine drop its caches, and the agent reads again from the state's applied offset
(``Outputs.rewound``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from contest_telemetry.logs import log_context
from streams.exceptions import ApplyError
from streams.processor import Engine, Outputs

__all__ = ["OutputSender", "RecordApplier"]

log = logging.getLogger(__name__)


class OutputSender(Protocol):
    """Sends one output record; returns the delivery future (raises when it cannot be queued)."""

    def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> Awaitable[asyncio.Future[Any]]: ...


class BatchSender(Protocol):
    """Sends many keyed records to one topic; returns one delivery future per Kafka batch."""

    def __call__(
        self, topic: str, records: list[tuple[bytes, bytes]]
    ) -> Awaitable[list[asyncio.Future[Any]]]: ...


StateWriter = Callable[[str, bytes | None, int], None]
"""Writes one state value (None: deletes the key) to the table and its changelog partition."""


def dict_writer(table: MutableMapping[str, Any]) -> StateWriter:
    """A :data:`StateWriter` for a plain mapping (tests; a faust table takes the app's writer)."""

    def write(key: str, value: bytes | None, partition: int) -> None:
        if value is not None:
            table[key] = value
        elif key in table:
            del table[key]

    return write


class RecordApplier:
    def __init__(
        self,
        engine: Engine,
        table: MutableMapping[str, Any],
        send: OutputSender,
        *,
        dlq_topic: str,
        records_topic: str,
        windows_topic: str,
        window_timeout_s: float,
        retry_s: float = 30.0,
        backoff_s: float = 0.25,
        max_backoff_s: float = 2.0,
        on_applied: Callable[[int, int, Outputs], None] | None = None,
        writer: StateWriter | None = None,
        flush_s: float = 1.0,
        flush_events: int = 200_000,
        on_fatal: Callable[[BaseException], None] | None = None,
        send_batch: BatchSender | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.writer = writer or dict_writer(table)
        self.flush_s = flush_s
        self.flush_events = flush_events
        self.on_fatal = on_fatal
        # Contest records, one per finished contest, in Kafka batches (a send per record cost more
        # than the record); None: one send each.
        self.send_batch = send_batch
        self._lock = asyncio.Lock()
        self._holder: asyncio.Task[Any] | None = None
        # Staged: deliveries of the dead letters and contest records sent since the last flush,
        # awaited before the state that follows them is written (bounded by flush_events).
        self._unacked: list[asyncio.Future[Any]] = []
        self._last_flush = time.monotonic()
        self.send = send
        self.dlq_topic = dlq_topic
        self.records_topic = records_topic
        self.windows_topic = windows_topic
        self.window_timeout_s = window_timeout_s
        self.retry_s = retry_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_applied = on_applied
        self.failure: BaseException | None = None
        self.retried = 0

    def _watch(self, future: asyncio.Future[Any]) -> None:
        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                exc: BaseException | None = asyncio.CancelledError("output send cancelled")
            else:
                exc = fut.exception()
            if exc is not None and self.failure is None:
                self.failure = exc
                log.error(
                    "an output could not be stored: %r; the worker stops before committing past it", exc
                )

        future.add_done_callback(done)
        if self.engine.stage:
            self._unacked.append(future)

    async def _send_records(self, records: list[tuple[bytes, bytes]]) -> None:
        if not records:
            return
        watch = self._watch
        if self.send_batch is not None:
            for future in await self.send_batch(self.records_topic, records):
                watch(future)
            return
        send = self.send
        for key, value in records:
            watch(await send(self.records_topic, key, value, None))

    def check(self) -> None:
        """Raise :class:`ApplyError` when an output sent earlier was not stored."""
        if self.failure is not None:
            raise ApplyError(f"an output could not be stored: {self.failure!r}")

    async def _emit(self, out: Outputs) -> None:
        send, watch = self.send, self._watch
        for key, value, headers in out.dlq:
            watch(await send(self.dlq_topic, key, value, headers))
        await self._send_records(out.records)
        if out.windows:
            # A state that says "emitted" must not reach the changelog before the result. Staged,
            # the state waits for every watched output before it is written (_flush): no need to
            # hold up the records behind this one for the acknowledgement.
            futures = [await send(self.windows_topic, key, value, None) for key, value in out.windows]
            if self.engine.stage:
                for future in futures:
                    watch(future)
            else:
                await asyncio.wait_for(asyncio.gather(*futures), self.window_timeout_s)
        write = self.writer
        for (tkey, tvalue), partition in zip(out.writes, out.write_partitions, strict=True):
            write(tkey, tvalue, partition)  # None: a tombstone, compaction drops the key

    async def apply(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: float | None,
        topic: str,
    ) -> Outputs:
        async with self._lock:
            self._holder = asyncio.current_task()
            try:
                out = await self._apply(partition, offset, key, value, timestamp_ms, topic)
                engine = self.engine
                if engine.stage and not out.rewound:
                    if engine.staged_events >= self.flush_events:
                        await self._flush("events")
                    elif time.monotonic() - self._last_flush >= self.flush_s:
                        await self._flush("interval")
                return out
            finally:
                self._holder = None

    async def flush_state(self, trigger: str = "commit") -> None:
        """Write the staged state now (faust's producer flush calls this before it flushes)."""
        if not self.engine.stage:
            return
        self.check()  # an output was not stored: the state that follows it must not be either
        if self._holder is not None and self._holder is asyncio.current_task():
            await self._flush(trigger)
            return
        async with self._lock:
            await self._flush(trigger)

    async def _flush(self, trigger: str) -> None:
        out = self.engine.flush()
        self._last_flush = time.monotonic()
        if not out.writes and not out.records:
            self._unacked.clear()
            return
        try:
            await self._send_records(out.records)
            if self._unacked:
                # The state says these records were applied: their outputs must be stored first.
                unacked, self._unacked = self._unacked, []
                await asyncio.wait_for(asyncio.gather(*unacked), self.window_timeout_s)
            self.check()
            write = self.writer
            for (tkey, tvalue), partition in zip(out.writes, out.write_partitions, strict=True):
                write(tkey, tvalue, partition)
        except Exception as exc:
            # A prefix of the flush may be in the changelog (streams/state.py is built for that),
            # but this process must not go on: nothing commits past it, the worker stops.
            error = ApplyError(f"writing the staged state failed: {exc!r}")
            self.failure = self.failure or error
            if self.on_fatal is not None:
                self.on_fatal(error)
            raise error from exc
        self.engine.counters.state_flush(trigger)

    async def _apply(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: float | None,
        topic: str,
    ) -> Outputs:
        started = time.monotonic()
        attempt = 0
        staged = self.engine.stage
        out: Outputs | None = None
        while True:
            self.check()
            if out is None or not staged:
                out = self.engine.process(partition, offset, key, value, timestamp_ms, topic)
                if out.rewound:
                    return out
            try:
                await self._emit(out)
            except Exception as exc:
                # Per record: the caches are ahead of the table now, forget them (the table is the
                # truth) and process the record again. Staged: the table was not touched, and the
                # caches hold the records before this one: send the same outputs again.
                if not staged:
                    self.engine.reset()
                attempt += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                if time.monotonic() - started + delay > self.retry_s:
                    error = ApplyError(
                        f"{topic}[{partition}]@{offset}: could not apply after {attempt} attempts: {exc!r}"
                    )
                    # The caches hold this record: no flush may write them (check() refuses).
                    self.failure = self.failure or error
                    raise error from exc
                self.retried += 1
                log.warning(
                    "%s[%d]@%d: applying failed (%r); reloading state and trying again in %.1f s",
                    topic,
                    partition,
                    offset,
                    exc,
                    delay,
                    extra=log_context(topic=topic, partition=partition, offset=offset),
                )
                await asyncio.sleep(delay)
                continue
            if self.on_applied is not None:
                self.on_applied(partition, offset, out)
            return out
