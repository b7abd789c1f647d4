"""The faust boundary: the one module that touches faust-streaming's (and, through it, aiokafka's)
internals, checked against faust-streaming 0.15.3 (:data:`FAUST_VERSIONS`, the range pinned in
pyproject.toml and checked by ``tests/streams/test_faust_patches.py``). It holds three corrections
to faust the worker applies at start (each once per process, :func:`apply`), the faust internals
the worker reads from other threads (:func:`built`, :func:`recovery_completed`,
:func:`assigned_partitions`), and the few it uses from faust's loop (:func:`kafka_producer`,
:func:`rebalancing`, :func:`partition_view`, :func:`refetch`, :func:`chain_agent_error`).
Everything else under ``streams/`` uses faust's public API only.

Each patch replaces one small method of a faust class; each is tested on its own in
``tests/streams/test_faust_patches.py`` so an upgrade that changes the patched code shows up there.

At-least-once delivery
----------------------
The worker's state holds, per input partition, the last source offset it applied
(``PartState.applied``); offsets at or below it are skipped, so applying a record twice is
harmless and the state, not faust's committed offset, says where reading must go on. Three parts
make sure every record reaches the state at least once; docs/known-issues.md has the faust bugs
behind them and how they were found.

1. The commit never gets ahead of the state (this module). faust commits source offsets right
   after ``producer.flush()``; :func:`complete_producer_flush` makes that flush wait for every
   changelog write, and :func:`check_outputs_before_commit` makes it write the staged state first
   (streams/apply.py) and raise, so nothing is committed, when an output was not stored.
2. A record the stream skips is read again (:mod:`streams.reread`). When faust's stream yields a
   record beyond ``applied + 1`` (records dropped on recovery, a commit over an unprocessed head),
   the agent reads the missing offsets with a consumer of its own and applies them first.
3. A partition faust stops delivering is sought again (:mod:`streams.watchdog`). A timer notices
   an owned partition with records waiting and nothing applied for ``CT_WORKER_STALL_S`` and seeks
   it to the state's next offset (:func:`refetch`); re-delivered records the state already applied
   are skipped, and records retention deleted before they were read are logged and counted.

streams/app.py wires the three: the agent checks (2) before each record, the timer runs (3), and
faust's own flush runs (1) before every commit, rebalance and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = [
    "FAUST_VERSIONS",
    "FETCH_MAX_WAIT_MS",
    "FLUSH_WARN_EVERY_S",
    "apply",
    "assigned_partitions",
    "built",
    "chain_agent_error",
    "check_outputs_before_commit",
    "complete_producer_flush",
    "kafka_producer",
    "partition_view",
    "rebalancing",
    "recovery_completed",
    "refetch",
    "short_fetch_wait",
]

log = logging.getLogger(__name__)

FAUST_VERSIONS = ">=0.15.3,<0.16"
"""The faust-streaming releases this module was checked against (pyproject.toml pins the same)."""

FLUSH_WARN_EVERY_S = 10.0

FETCH_MAX_WAIT_MS = 100
"""The worker's consumer waits at most this long for a fetch to fill. faust hardcodes 1500 ms
(``faust/transport/drivers/aiokafka.py``); Apache Kafka answers as soon as data arrives, but Tansu
holds every fetch for the full wait, which put ~1.5 s between a record's arrival and its processing
(window results late by as much). With data waiting both brokers answer at once."""


def short_fetch_wait() -> None:
    """Make faust's worker consumer use :data:`FETCH_MAX_WAIT_MS`."""
    from faust.transport.drivers import aiokafka as faust_aiokafka

    thread_cls: Any = faust_aiokafka.AIOKafkaConsumerThread
    if getattr(thread_cls, "_ct_short_fetch_wait", False):
        return
    create = thread_cls._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        return consumer

    thread_cls._create_worker_consumer = _create_worker_consumer
    thread_cls._ct_short_fetch_wait = True


def complete_producer_flush() -> None:
    """Make faust's ``ProducerBuffer.flush()`` return only when every buffered message is handed on.

    Table writes (the changelog) go through faust's ``ProducerBuffer``: a queue drained by a task
    that hands one message at a time to aiokafka. Before committing source offsets, and before
    reading changelog highwaters for recovery, faust calls ``producer.flush()``, whose buffer
    flush gives up as soon as one message takes longer than 0.1 s to leave the queue
    (``flush_atmost``: ``wait_for(..., timeout=0.1)`` then ``return``) and never waits for the
    message the drain task has taken off the queue but not yet handed to aiokafka (seen in a
    worker: the flush returned with 111 writes queued). Offsets could then be committed while the
    changelog writes of those records were still in this process: a worker killed at that moment
    lost them, and its successor resumed after the committed offset. With this patch the flush
    loops until the queue is empty and nothing is between queue and aiokafka; faust's
    ``producer.flush()`` then flushes aiokafka itself.
    """
    from faust.transport.producer import ProducerBuffer

    buffer_cls: Any = ProducerBuffer
    if getattr(buffer_cls, "_ct_complete_flush", False):
        return
    send_pending = buffer_cls._send_pending
    flush_atmost = buffer_cls.flush_atmost

    async def _send_pending(self: Any, fut: Any) -> None:
        self._ct_in_flight = getattr(self, "_ct_in_flight", 0) + 1
        try:
            await send_pending(self, fut)
        finally:
            self._ct_in_flight -= 1

    async def flush(self: Any) -> None:
        started = warned = time.monotonic()
        while True:
            if self.size:
                await flush_atmost(self, None)  # raises if the buffer stopped with messages queued
            elif getattr(self, "_ct_in_flight", 0):
                await asyncio.sleep(0.001)
            else:
                return
            now = time.monotonic()
            if now - warned >= FLUSH_WARN_EVERY_S:
                # A flush that does not end holds back commits and rebalances: say so.
                warned = now
                log.warning(
                    "changelog flush waiting for %.0f s: %d writes queued, %d being handed to the producer",
                    now - started,
                    self.size,
                    getattr(self, "_ct_in_flight", 0),
                )

    buffer_cls._ct_original_flush = buffer_cls.flush  # kept for tests/streams/test_faust_patches.py
    buffer_cls._send_pending = _send_pending
    buffer_cls.flush = flush
    buffer_cls._ct_complete_flush = True


def check_outputs_before_commit() -> None:
    """Make faust's producer flush write the worker's staged state first, and raise when an output
    the worker sent was not stored.

    faust commits source offsets right after ``app.producer.flush()``
    (``Consumer._commit_offsets``); a dead letter or contest record whose delivery failed during
    that flush would be committed past without a trace. The worker's
    :class:`streams.apply.RecordApplier` (``app.applier``) watches those deliveries; with this
    patch the flush raises its :class:`~streams.exceptions.ApplyError` after flushing, so the
    commit does not happen and the worker stops."""
    from faust.transport.drivers.aiokafka import Producer

    producer_cls: Any = Producer
    if getattr(producer_cls, "_ct_check_outputs", False):
        return
    flush = producer_cls.flush

    async def checked_flush(self: Any) -> None:
        applier = getattr(self.app, "applier", None)
        if applier is not None:
            # The staged state first (streams/apply.py): what the commit covers must be durable.
            await applier.flush_state()
        await producer_cls._ct_original_producer_flush(self)
        if applier is not None:
            # A delivery that completed during the flush reports through its done-callback, which
            # the loop runs on its next turn: let it run before looking.
            await asyncio.sleep(0)
            applier.check()

    producer_cls._ct_original_producer_flush = flush
    producer_cls.flush = checked_flush
    producer_cls._ct_check_outputs = True


def apply() -> None:
    short_fetch_wait()
    complete_producer_flush()
    check_outputs_before_commit()


# -- faust internals read outside faust's loop (the worker's exporter threads) ----------------------
def built(obj: Any, name: str) -> Any:
    """The value of faust's ``cached_property`` ``name`` if faust already built it, else None.
    The exporter's threads must never be the first to read one: they would build the service
    (faust's recovery, its assignor) outside faust's event loop, and the worker then hung at start
    ("Waiting for tables to be registered...")."""
    return None if obj is None else obj.__dict__.get(name)


def recovery_completed(app: Any) -> bool:
    """Whether faust's table recovery finished (``TableManager._recovery``, never built here)."""
    recovery = getattr(built(app, "tables"), "_recovery", None)
    return recovery is not None and bool(recovery.completed.is_set())


def assigned_partitions(app: Any, topic: str) -> set[int] | None:
    """The partitions of ``topic`` faust's assignor gave this worker, None before it has any.
    Read from the exporter's threads: never builds the assignor there (see :func:`built`)."""
    assignor = built(app, "assignor")
    if assignor is None:
        return None
    try:
        return {tp.partition for tp in assignor.assigned_actives() if tp.topic == topic}
    except Exception:  # not started yet
        return None


# -- faust internals used from faust's event loop --------------------------------------------------
def kafka_producer(producer: Any) -> Any:
    """The aiokafka producer under faust's ``producer`` (the one faust flushes before it commits)."""
    return producer._ensure_producer()


def rebalancing(app: Any) -> bool:
    """Whether faust is rebalancing or recovering tables: partition ownership may be changing."""
    return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))


def partition_view(consumer: Any, tp: Any) -> dict[str, Any]:
    """faust's view of one partition of its consumer, for a log line."""
    return {
        "active": tp in (getattr(consumer, "_active_partitions", None) or ()),
        "buffered": tp in getattr(consumer, "_buffered_partitions", ()),
        "paused": tp in getattr(consumer, "_paused_partitions", ()),
        "flow_active": getattr(consumer, "flow_active", None),
    }


async def refetch(consumer: Any, tp: Any, offset: int) -> None:
    """Put ``tp`` back into faust's fetch set (a no-op when it is there), then seek it to ``offset``
    in faust's consumer thread, which also resets faust's read offset for the partition. Flow
    control is left alone: resuming it clears every agent queue."""
    getattr(consumer, "_buffered_partitions", set()).discard(tp)
    consumer.resume_partitions({tp})
    await consumer.seek_wait({tp: offset})


AgentErrorHook = Callable[[Any, BaseException], Awaitable[None]]


def chain_agent_error(agent: Any, first: AgentErrorHook) -> None:
    """Make ``agent`` call ``first`` when it crashes, then the hook faust gave it (the consumer's
    task-error hook, which faust passes to every agent as ``on_error``)."""
    faust_on_error = agent._on_error

    async def on_agent_error(crashed: Any, exc: BaseException) -> None:
        await first(crashed, exc)
        if faust_on_error is not None:
            await faust_on_error(crashed, exc)

    agent._on_error = on_agent_error
