"""The faust app: one agent over ``contest.events``, one changelog-backed table of state.

Per Kafka record the agent calls :meth:`streams.processor.Engine.process` (pure logic), then
1. sends dead letters and contest records (not awaited: faust flushes the producer before it
   commits the source offset, see ``faust/transport/consumer.py`` ``_commit_offsets``),
2. sends the closed windows' results and waits for their acknowledgement (windows close rarely,
   once per window and partition), so a state that says "emitted" is never in the changelog
   before the result is in ``contest.windows``,
3. writes each touched table key once, in the engine's order.
Source offsets are committed by faust only for records whose iteration finished, and only after
``producer.flush()`` (made complete by :mod:`streams.faust_patches`): the state a record produced
is in the changelog before its offset is committed (at-least-once); the ``applied`` offsets inside
the state make the replay idempotent, a record the stream skips is read again
(:mod:`streams.reread`) and a partition faust stops delivering is sought again
(:mod:`streams.watchdog`). How the three cooperate: "At-least-once delivery" in
:mod:`streams.faust_patches`, the only module that touches faust's internals. Dead letters and
contest records are not ordered before the state: see docs/known-issues.md for the measured cost
of doing so.

Why not ``stream.take()``: table writes inside it raise "Cannot modify table key from outside of
stream iteration" (faust-streaming #497). Why not faust windowed tables: their expiry follows
wall-clock time (#193, #385, #250); windows here close on the event-time watermark.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import faust
from faust.types import TP

from contest_telemetry.logs import log_context
from contest_telemetry.settings import KafkaSettings, TopicSettings, max_request_bytes
from streams import faust_patches
from streams.apply import RecordApplier
from streams.counters import CounterSink
from streams.exceptions import ApplyError, RereadError
from streams.health import WorkerHealth
from streams.processor import Engine
from streams.reread import RangeReader, missing_range
from streams.settings import WorkerSettings
from streams.snapshot import PipelineSnapshot
from streams.timing import TimingReport
from streams.watchdog import StallWatch

__all__ = ["TABLE_NAME", "WorkerApp", "WorkerSource", "create_app"]

log = logging.getLogger(__name__)
TABLE_NAME = "state"


class WorkerSource:
    """The worker's :class:`streams.snapshot.SnapshotSource`."""

    def __init__(self, app: faust.App, engine: Engine, topic: str) -> None:
        self.app = app
        self.engine = engine
        self.topic = topic
        self.positions: dict[int, int] = {}

    def assigned(self) -> set[int] | None:
        return faust_patches.assigned_partitions(self.app, self.topic)

    def snapshot(self) -> PipelineSnapshot:
        assigned = self.assigned()
        snap = self.engine.snapshot(assigned if assigned is not None else set())
        lag: dict[tuple[str, int], int] = {}
        for partition in sorted(assigned or ()):
            try:
                high = self.app.consumer.highwater(TP(self.topic, partition))
            except Exception:
                continue
            if high is not None:
                lag[(self.topic, partition)] = max(0, high - (self.positions.get(partition, -1) + 1))
        return PipelineSnapshot(
            last=snap.last,
            rolling=snap.rolling,
            watermark_ms=snap.watermark_ms,
            newest_event_time_ms=snap.newest_event_time_ms,
            lag=lag,
        )


def _faust_app(settings: WorkerSettings, kafka: KafkaSettings, topics: TopicSettings) -> faust.App:
    servers = [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()]
    return faust.App(
        settings.app_id,
        broker=[f"kafka://{s}" for s in servers],
        store="memory://",
        datadir=str(settings.data_dir),
        topic_partitions=topics.partitions,
        topic_replication_factor=topics.replication_factor,
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        web_bind="127.0.0.1",
        producer_acks=settings.producer_acks,
        producer_linger=0.005,
        producer_max_request_size=max_request_bytes(topics.output_max_message_bytes),
        producer_max_batch_size=settings.producer_max_batch_bytes,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        broker_client_id=kafka.client_id,
        broker_credentials=kafka.faust_credentials(),
        stream_buffer_maxsize=1024,
    )


class WorkerApp:
    """The worker: its faust app (``self.app``), the agent over the source topic (:meth:`process`),
    the stall timer (:meth:`watch_stalls`) and the hooks faust and the applier call.

    Built by :func:`create_app`. The app keeps it alive (``app.worker_app``) and carries what other
    modules read: ``app.engine``, ``app.source``, ``app.health``, ``app.applier`` (the commit check
    in streams/faust_patches.py), ``app.process_agent`` and, once stopping on an error, ``app.fatal``.
    """

    PARTITION_CACHE_MAX = 100_000
    """Contest record keys (hub ids) whose partition is remembered, cleared beyond that: above
    CT_WORKER_MAX_HUBS' default, so a worker's hubs all fit."""

    def __init__(
        self,
        settings: WorkerSettings,
        kafka: KafkaSettings,
        topics: TopicSettings,
        counters: CounterSink | None = None,
        health: WorkerHealth | None = None,
    ) -> None:
        faust_patches.apply()
        self.settings = settings
        self.topics = topics
        self.app = app = _faust_app(settings, kafka, topics)
        # The ingest stage's packed records (streams/ingested.py), or contest.events record by record.
        self.source_name = topics.ingested if settings.source == "ingested" else topics.events
        self.source_topic = app.topic(
            self.source_name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=topics.partitions,
        )
        self.table = app.Table(
            TABLE_NAME,
            schema=faust.Schema(
                key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
            ),
            partitions=topics.partitions,
            recovery_buffer_size=10_000,
        )
        self.engine = Engine(
            settings,
            self.table,
            counters,
            self.source_name,
            stage=settings.state_flush_s > 0,
            dlq_max_bytes=topics.dlq_max_bytes,
            events_topic=topics.events,
        )
        self.source = WorkerSource(app, self.engine, self.source_name)
        self.health = health if health is not None else WorkerHealth(settings)
        self.health.app = app
        self.health.assigned = self.source.assigned
        self.partitions: dict[bytes, int] = {}  # contest record key (its hub) -> partition
        self.timing = TimingReport.from_settings(settings)
        self.reader = RangeReader(kafka, self.source_name, timeout_s=settings.reread_timeout_s)
        self.watch = StallWatch(settings.stall_s)
        self.current: Any = None  # the message in hand, for the crash report
        self.applier = RecordApplier(
            self.engine,
            self.table,
            self.send,
            writer=self.write_state,
            flush_s=settings.state_flush_s,
            flush_events=settings.state_flush_events,
            on_fatal=self.stop_worker,
            send_batch=self.send_batch,
            dlq_topic=topics.dlq,
            records_topic=topics.records,
            windows_topic=topics.windows,
            window_timeout_s=settings.window_send_timeout_s,
            retry_s=settings.apply_retry_s,
            on_applied=self.applied,
        )
        self._register()

    def _register(self) -> None:
        """Hand faust the agent, the timer and the signal handlers; publish what others read."""
        app: Any = self.app
        app.worker_app = self
        app.engine = self.engine
        app.source = self.source
        app.health = self.health
        app.applier = self.applier  # read by faust_patches' commit check
        app.on_partitions_revoked.connect(self.on_rebalance)
        app.on_partitions_assigned.connect(self.on_rebalance)
        agent = app.agent(self.source_topic, name="contest-events")(self.process)
        app.timer(interval=min(5.0, self.settings.stall_s / 3))(self.watch_stalls)
        app.on_before_shutdown.connect(self.close_reader)
        # faust passes its own on_error (the consumer's task-error hook) to every agent: count the
        # crash for /healthz first, then call it.
        faust_patches.chain_agent_error(agent, self.on_agent_error)
        app.process_agent = agent

    # ------------------------------------------------------------------ faust's signals
    async def on_rebalance(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        """Partitions revoked or assigned: the engine's caches may describe partitions gone."""
        self.engine.reset()

    async def close_reader(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        await self.reader.close()

    async def on_agent_error(self, agent: Any, exc: BaseException) -> None:
        msg = self.current
        if msg is not None:
            log.error(
                "%s[%d]@%d: the agent crashed on this record (%r); faust restarts it",
                msg.topic,
                msg.partition,
                msg.offset,
                exc,
                extra=log_context(topic=msg.topic, partition=msg.partition, offset=msg.offset),
            )
        await self.health.on_agent_error(agent, exc)

    # ------------------------------------------------------------------ outputs, for the applier
    async def _partition(self, kafka_producer: Any, topic: str, key: bytes) -> int:
        """The partition of a contest record: the one faust's (aiokafka's default) partitioner
        picks for the key, remembered per key."""
        partitions = self.partitions
        partition = partitions.get(key)
        if partition is None:
            if not partitions:
                await kafka_producer.partitions_for(topic)  # metadata for key_partition
            elif len(partitions) > self.PARTITION_CACHE_MAX:
                partitions.clear()
            partition = partitions[key] = self.app.producer.key_partition(topic, key).partition
        return partition

    async def send(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> asyncio.Future[Any]:
        """One output; returns its delivery future. Contest records go straight to the aiokafka
        producer under faust's (the same one faust flushes before it commits): faust's
        per-message wrapper (signals, headers, timestamp conversion) cost more than the send
        itself at one record per finished contest."""
        producer = self.app.producer
        if topic != self.topics.records or key is None or headers:
            return await producer.send(topic, key, value, None, None, headers)  # type: ignore[no-any-return,return-value]
        kafka = faust_patches.kafka_producer(producer)
        partition = await self._partition(kafka, topic, key)
        return await kafka.send(topic, value, key=key, partition=partition)  # type: ignore[no-any-return]

    async def send_batch(self, topic: str, records: list[tuple[bytes, bytes]]) -> list[asyncio.Future[Any]]:
        """Contest records in aiokafka batches, one per partition (the partition ``send`` picks):
        one accumulator entry per batch instead of one per finished contest."""
        kafka = faust_patches.kafka_producer(self.app.producer)
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in records:
            partition = await self._partition(kafka, topic, key)
            by_partition.setdefault(partition, []).append((key, value))
        futures: list[asyncio.Future[Any]] = []
        for partition, items in by_partition.items():
            batch = kafka.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if batch.record_count():
                        futures.append(await kafka.send_batch(batch, topic, partition=partition))
                        batch = kafka.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        # Larger than a batch on its own: the producer's own path sizes it.
                        futures.append(await kafka.send(topic, value, key=key, partition=partition))
                        batch = kafka.create_batch()
            if batch.record_count():
                futures.append(await kafka.send_batch(batch, topic, partition=partition))
        return futures

    def write_state(self, key: str, value: bytes | None, partition: int) -> None:
        """One staged write: the table's store and its changelog partition (the input partition of
        the key's hub), named explicitly because a flush runs outside faust's current event."""
        store: Any = self.table.data
        if value is None:
            if key in store:
                del store[key]
            self.table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            store[key] = value
            self.table.send_changelog(partition, key, value)

    def applied(self, partition: int, offset: int, out: Any) -> None:
        self.source.positions[partition] = offset
        if self.timing is not None:
            self.timing.add(out.events)

    def stop_worker(self, exc: BaseException) -> None:
        """Stop the process with a non-zero exit: faust's ``app.crash`` only stops the agent and
        leaves a worker that looks alive and processes nothing. SIGTERM runs faust's orderly
        shutdown; ``streams.cli.run_worker`` returns 1 when ``app.fatal`` is set."""
        app: Any = self.app
        if getattr(app, "fatal", None) is None:
            app.fatal = exc
            os.kill(os.getpid(), signal.SIGTERM)

    # ------------------------------------------------------------------ the agent
    async def process(self, stream: faust.StreamT) -> None:
        """The agent: each record of the source topic, after any range the stream skipped."""
        engine, health = self.engine, self.health
        async for event in stream.events():
            msg = self.current = event.message
            health.inject(msg.partition, msg.offset)
            ts = msg.timestamp * 1000.0 if msg.timestamp else None
            while True:
                gap = missing_range(engine.applied(msg.partition), msg.offset)
                if gap is not None:
                    await self.reread(msg.partition, gap[0], gap[1], msg.topic)
                if await self.apply(msg.partition, msg.offset, msg.key, msg.value, ts, msg.topic):
                    break

    async def apply(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        ts: float | None,
        topic: str,
    ) -> bool:
        """Apply one record; False when the engine rewound (its caches, with the records staged
        since the last flush, were dropped): read again from its applied offset, this one included."""
        try:
            out = await self.applier.apply(partition, offset, key, value, ts, topic)
        except ApplyError as exc:
            # faust would restart the agent and go on past the record: stop the worker instead.
            log.error("%s", exc)
            self.stop_worker(exc)
            raise
        if out.rewound:
            # Other partitions' staged records went too: let the watchdog see them as waiting.
            self.source.positions.clear()
            return False
        return True

    async def reread(self, partition: int, first: int, stop: int, topic: str) -> None:
        """Apply ``[first, stop)`` read again (see streams/reread.py) before the record in hand."""
        found = 0
        rewound = False
        try:
            async for rec in self.reader.read(partition, first, stop):
                found += 1
                ts = float(rec.timestamp) if rec.timestamp and rec.timestamp > 0 else None
                if not await self.apply(partition, rec.offset, rec.key, rec.value, ts, topic):
                    rewound = True  # the caller reads again from the state's applied offset
                    break
        except RereadError as exc:
            # faust would restart the agent and go on past the hole: stop the worker instead.
            log.error("%s", exc)
            self.stop_worker(exc)
            raise
        if rewound:
            return
        missing = self.watch.unreported(partition, first, stop, stop - first - found)
        log.warning(
            "%s[%d]: the stream skipped offsets %d..%d the state had not applied; read them again "
            "(%d records, %d offsets absent from the log)",
            topic,
            partition,
            first,
            stop - 1,
            found,
            missing,
            extra=log_context(topic=topic, partition=partition, first_offset=first, last_offset=stop - 1),
        )
        self.engine.counters.reread(found, missing)

    # ------------------------------------------------------------------ the stall timer
    async def watch_stalls(self) -> None:
        """See streams/watchdog.py: find owned partitions that stopped being fetched. Also feeds
        the liveness check (streams/health.py) its heartbeat and each partition's progress."""
        app, engine, health, watch = self.app, self.engine, self.health, self.watch
        health.progress.beat()
        if faust_patches.rebalancing(app):
            watch.forget()
            health.progress.forget()
            return
        owned = self.source.assigned() or set()
        watch.forget(owned)
        health.progress.forget(owned)
        for partition in sorted(owned):
            tp = TP(self.source_name, partition)
            try:
                # The broker's end offset: faust's cached highwater stops moving with its fetches.
                high = await self.reader.end_offset(partition)
                low = await self.reader.start_offset(partition)
                if faust_patches.rebalancing(app):
                    return
                applied = engine.peek_applied(partition)
                position = max(self.source.positions.get(partition, -1), applied)
                lost = watch.lost(partition, position, low)
                if lost is not None:
                    log.warning(
                        "%s[%d]: offsets %d..%d were deleted by retention before this worker read them",
                        tp.topic,
                        tp.partition,
                        lost[0],
                        lost[1] - 1,
                        extra=log_context(
                            topic=tp.topic,
                            partition=tp.partition,
                            first_offset=lost[0],
                            last_offset=lost[1] - 1,
                        ),
                    )
                    engine.counters.reread(0, lost[1] - lost[0])
                position = max(position, low - 1)  # below the log start nothing waits: it is gone
                health.progress.observe(partition, position, high > position + 1)
                if watch.observe(partition, position, high > position + 1, time.monotonic()):
                    await self.unstick(tp, max(applied, low - 1), high)
            except Exception as exc:  # a broker blip or a rebalance under way: try again next tick
                log.warning(
                    "%s[%d]: stall check failed: %r",
                    tp.topic,
                    tp.partition,
                    exc,
                    extra=log_context(topic=tp.topic, partition=tp.partition),
                )

    async def unstick(self, tp: TP, applied: int, high: int) -> None:
        """Log faust's view of a stalled partition, then seek it to the state's next offset."""
        consumer = self.app.consumer
        view = faust_patches.partition_view(consumer, tp)
        log.warning(
            "%s[%d]: %d records waiting and none applied for %.0f s; putting the partition back into "
            "fetching from offset %d (faust: active=%s buffered=%s paused=%s flow_active=%s)",
            tp.topic,
            tp.partition,
            high - applied - 1,
            self.settings.stall_s,
            applied + 1,
            view["active"],
            view["buffered"],
            view["paused"],
            view["flow_active"],
            extra=log_context(topic=tp.topic, partition=tp.partition, offset=applied + 1),
        )
        await faust_patches.refetch(consumer, tp, max(applied + 1, 0))
        self.engine.counters.stalls(1)


def create_app(
    settings: WorkerSettings,
    kafka: KafkaSettings,
    topics: TopicSettings,
    counters: CounterSink | None = None,
    health: WorkerHealth | None = None,
) -> faust.App:
    """Build the worker's faust app (a :class:`WorkerApp`'s); ``app.source`` is its snapshot source,
    ``app.engine`` its logic, ``app.health`` what its ``/healthz`` and ``/readyz`` answer
    (``health``, or a new one)."""
    return WorkerApp(settings, kafka, topics, counters, health).app
