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
the state make the replay idempotent, and a record the stream skips is read again
(:mod:`streams.reread`). Dead letters and contest records are not ordered before the state: see
docs/known-issues.md for the measured cost of doing so.

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
import orjson
from faust.types import TP

from contest_telemetry.logs import log_context
from contest_telemetry.settings import KafkaSettings, TopicSettings
from streams import faust_patches
from streams.apply import RecordApplier
from streams.counters import CounterSink
from streams.exceptions import ApplyError, RereadError
from streams.faust_patches import built
from streams.health import WorkerHealth
from streams.processor import Engine
from streams.reread import RangeReader, missing_range
from streams.settings import WorkerSettings
from streams.snapshot import PipelineSnapshot
from streams.watchdog import StallWatch

__all__ = ["TABLE_NAME", "WorkerSource", "create_app"]

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
        assignor = built(self.app, "assignor")  # read from the exporter's threads: never build it there
        if assignor is None:
            return None
        try:
            return {tp.partition for tp in assignor.assigned_actives() if tp.topic == self.topic}
        except Exception:  # not started yet
            return None

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


class _BenchProbe:
    """Benchmark instrumentation: time from the first applied event to the expected count."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.expect = settings.bench_expect_events or 0
        self.path = settings.bench_report
        self.events = 0
        self.first: float | None = None
        self.cpu = (0.0, 0.0)

    def add(self, n: int) -> None:
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu = (time.thread_time(), time.process_time())
        before = self.events
        self.events += n
        if before < self.expect <= self.events and self.path is not None:
            elapsed = time.perf_counter() - self.first
            self.path.write_bytes(
                orjson.dumps(
                    {
                        "events": self.events,
                        "seconds": elapsed,
                        "rss_peak_kb": _peak_rss_kb(),
                        # CPU seconds over the same span: the agent's thread, the whole process
                        # (faust's consumer runs in a thread of its own).
                        "main_thread_cpu_s": time.thread_time() - self.cpu[0],
                        "process_cpu_s": time.process_time() - self.cpu[1],
                    }
                )
            )


def _peak_rss_kb() -> int:
    """VmHWM of this process (``ru_maxrss`` carries a parent's peak across fork and exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def create_app(
    settings: WorkerSettings,
    kafka: KafkaSettings,
    topics: TopicSettings,
    counters: CounterSink | None = None,
    health: WorkerHealth | None = None,
) -> faust.App:
    """Build the worker's faust app; ``app.source`` is its snapshot source, ``app.engine`` its logic,
    ``app.health`` what its ``/healthz`` and ``/readyz`` answer (``health``, or a new one)."""
    faust_patches.apply()
    servers = [s.strip() for s in kafka.bootstrap_servers.split(",") if s.strip()]
    app = faust.App(
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
        producer_max_request_size=4 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        broker_client_id=kafka.client_id,
        broker_credentials=kafka.faust_credentials(),
        stream_buffer_maxsize=1024,
    )
    # The ingest stage's packed records (streams/ingested.py), or contest.events record by record.
    source_name = topics.ingested if settings.source == "ingested" else topics.events
    source_topic = app.topic(
        source_name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=topics.partitions,
    )
    table = app.Table(
        TABLE_NAME,
        schema=faust.Schema(key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"),
        partitions=topics.partitions,
        recovery_buffer_size=10_000,
    )
    engine = Engine(settings, table, counters, source_name, stage=settings.state_flush_s > 0)
    source = WorkerSource(app, engine, source_name)
    app.engine = engine  # type: ignore[attr-defined]
    app.source = source  # type: ignore[attr-defined]
    health = health if health is not None else WorkerHealth(settings)
    health.app = app
    health.assigned = source.assigned
    app.health = health  # type: ignore[attr-defined]
    timeout = settings.window_send_timeout_s

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:
        engine.reset()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:
        engine.reset()

    partitions: dict[bytes, int] = {}

    async def send(
        topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> asyncio.Future[Any]:
        """One output; returns its delivery future. Contest records go straight to the aiokafka
        producer under faust's (the same one faust flushes before it commits): faust's
        per-message wrapper (signals, headers, timestamp conversion) cost more than the send
        itself at one record per finished contest. Their partition is the one faust's (aiokafka's
        default) partitioner picks for the key."""
        producer = app.producer
        if topic != topics.records or key is None or headers:
            return await producer.send(topic, key, value, None, None, headers)  # type: ignore[no-any-return,return-value]
        kafka_producer = producer._ensure_producer()  # type: ignore[attr-defined]
        partition = partitions.get(key)
        if partition is None:
            if not partitions:
                await kafka_producer.partitions_for(topic)  # metadata for key_partition
            elif len(partitions) > 100_000:
                partitions.clear()
            partition = partitions[key] = producer.key_partition(topic, key).partition
        return await kafka_producer.send(topic, value, key=key, partition=partition)  # type: ignore[no-any-return,return-value]

    async def send_batch(topic: str, records: list[tuple[bytes, bytes]]) -> list[asyncio.Future[Any]]:
        """Contest records in aiokafka batches, one per partition (the partition ``send`` picks):
        one accumulator entry per batch instead of one per finished contest."""
        kafka_producer = app.producer._ensure_producer()  # type: ignore[attr-defined]
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for key, value in records:
            partition = partitions.get(key)
            if partition is None:
                if not partitions:
                    await kafka_producer.partitions_for(topic)  # metadata for key_partition
                elif len(partitions) > 100_000:
                    partitions.clear()
                partition = partitions[key] = app.producer.key_partition(topic, key).partition
            by_partition.setdefault(partition, []).append((key, value))
        futures: list[asyncio.Future[Any]] = []
        for partition, items in by_partition.items():
            batch = kafka_producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    if batch.record_count():
                        futures.append(await kafka_producer.send_batch(batch, topic, partition=partition))
                        batch = kafka_producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        # Larger than a batch on its own: the producer's own path sizes it.
                        futures.append(await kafka_producer.send(topic, value, key=key, partition=partition))
                        batch = kafka_producer.create_batch()
            if batch.record_count():
                futures.append(await kafka_producer.send_batch(batch, topic, partition=partition))
        return futures

    def stop_worker(exc: BaseException) -> None:
        """Stop the process with a non-zero exit: faust's ``app.crash`` only stops the agent and
        leaves a worker that looks alive and processes nothing. SIGTERM runs faust's orderly
        shutdown; ``streams.cli.run_worker`` returns 1 when ``app.fatal`` is set."""
        if getattr(app, "fatal", None) is None:
            app.fatal = exc  # type: ignore[attr-defined]
            os.kill(os.getpid(), signal.SIGTERM)

    bench = _BenchProbe(settings) if settings.bench_expect_events else None
    reader = RangeReader(kafka, source_name, timeout_s=settings.reread_timeout_s)

    def applied(partition: int, offset: int, out: Any) -> None:
        source.positions[partition] = offset
        if bench is not None:
            bench.add(out.events)

    def write_state(key: str, value: bytes | None, partition: int) -> None:
        """One staged write: the table's store and its changelog partition (the input partition of
        the key's hub), named explicitly because a flush runs outside faust's current event."""
        store: Any = table.data
        if value is None:
            if key in store:
                del store[key]
            table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            store[key] = value
            table.send_changelog(partition, key, value)

    applier = RecordApplier(
        engine,
        table,
        send,
        writer=write_state,
        flush_s=settings.state_flush_s,
        flush_events=settings.state_flush_events,
        on_fatal=stop_worker,
        send_batch=send_batch,
        dlq_topic=topics.dlq,
        records_topic=topics.records,
        windows_topic=topics.windows,
        window_timeout_s=timeout,
        retry_s=settings.apply_retry_s,
        on_applied=applied,
    )
    app.applier = applier  # type: ignore[attr-defined]  # read by faust_patches' commit check

    async def apply(
        partition: int, offset: int, key: bytes | None, value: bytes | None, ts: float | None, topic: str
    ) -> bool:
        """Apply one record; False when the engine rewound (its caches, with the records staged
        since the last flush, were dropped): read again from its applied offset, this one included."""
        try:
            out = await applier.apply(partition, offset, key, value, ts, topic)
        except ApplyError as exc:
            # faust would restart the agent and go on past the record: stop the worker instead.
            log.error("%s", exc)
            stop_worker(exc)
            raise
        if out.rewound:
            # Other partitions' staged records went too: let the watchdog see them as waiting.
            source.positions.clear()
            return False
        return True

    async def reread(partition: int, first: int, stop: int, topic: str) -> None:
        """Apply ``[first, stop)`` read again (see streams/reread.py) before the record in hand."""
        found = 0
        rewound = False
        try:
            async for rec in reader.read(partition, first, stop):
                found += 1
                ts = float(rec.timestamp) if rec.timestamp and rec.timestamp > 0 else None
                if not await apply(partition, rec.offset, rec.key, rec.value, ts, topic):
                    rewound = True  # the caller reads again from the state's applied offset
                    break
        except RereadError as exc:
            # faust would restart the agent and go on past the hole: stop the worker instead.
            log.error("%s", exc)
            stop_worker(exc)
            raise
        if rewound:
            return
        missing = watch.unreported(partition, first, stop, stop - first - found)
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
        engine.counters.reread(found, missing)

    current: list[Any] = [None]  # the message in hand, for the crash report

    @app.agent(source_topic, name="contest-events")
    async def process(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = current[0] = event.message
            health.inject(msg.partition, msg.offset)
            ts = msg.timestamp * 1000.0 if msg.timestamp else None
            while True:
                gap = missing_range(engine.applied(msg.partition), msg.offset)
                if gap is not None:
                    await reread(msg.partition, gap[0], gap[1], msg.topic)
                if await apply(msg.partition, msg.offset, msg.key, msg.value, ts, msg.topic):
                    break

    watch = StallWatch(settings.stall_s)

    @app.timer(interval=min(5.0, settings.stall_s / 3))
    async def _watch_stalls() -> None:
        """See streams/watchdog.py: find owned partitions that stopped being fetched. Also feeds
        the liveness check (streams/health.py) its heartbeat and each partition's progress."""
        health.progress.beat()
        if _rebalancing():
            watch.forget()
            health.progress.forget()
            return
        owned = source.assigned() or set()
        watch.forget(owned)
        health.progress.forget(owned)
        for partition in sorted(owned):
            tp = TP(source_name, partition)
            try:
                # The broker's end offset: faust's cached highwater stops moving with its fetches.
                high = await reader.end_offset(partition)
                low = await reader.start_offset(partition)
                if _rebalancing():
                    return
                applied = engine.peek_applied(partition)
                position = max(source.positions.get(partition, -1), applied)
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
                    await unstick(tp, max(applied, low - 1), high)
            except Exception as exc:  # a broker blip or a rebalance under way: try again next tick
                log.warning(
                    "%s[%d]: stall check failed: %r",
                    tp.topic,
                    tp.partition,
                    exc,
                    extra=log_context(topic=tp.topic, partition=tp.partition),
                )

    def _rebalancing() -> bool:
        return bool(getattr(app, "rebalancing", False) or getattr(app, "in_recovery", False))

    async def unstick(tp: TP, applied: int, high: int) -> None:
        consumer: Any = app.consumer
        log.warning(
            "%s[%d]: %d records waiting and none applied for %.0f s; putting the partition back into "
            "fetching from offset %d (faust: active=%s buffered=%s paused=%s flow_active=%s)",
            tp.topic,
            tp.partition,
            high - applied - 1,
            settings.stall_s,
            applied + 1,
            tp in (getattr(consumer, "_active_partitions", None) or ()),
            tp in getattr(consumer, "_buffered_partitions", ()),
            tp in getattr(consumer, "_paused_partitions", ()),
            getattr(consumer, "flow_active", None),
            extra=log_context(topic=tp.topic, partition=tp.partition, offset=applied + 1),
        )
        # Back into faust's fetch set (a no-op when it is there), then a seek done in faust's
        # consumer thread, which also resets faust's read offset for the partition. Flow control
        # is left alone: resuming it clears every agent queue.
        getattr(consumer, "_buffered_partitions", set()).discard(tp)
        consumer.resume_partitions({tp})
        await consumer.seek_wait({tp: max(applied + 1, 0)})
        engine.counters.stalls(1)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _close_reader(sender: Any, *args: Any, **kwargs: Any) -> None:
        await reader.close()

    # faust passes its own on_error (the consumer's task-error hook) to every agent: count the crash
    # for /healthz first, then call it.
    faust_on_error = process._on_error  # type: ignore[attr-defined]

    async def on_agent_error(agent: Any, exc: BaseException) -> None:
        msg = current[0]
        if msg is not None:
            log.error(
                "%s[%d]@%d: the agent crashed on this record (%r); faust restarts it",
                msg.topic,
                msg.partition,
                msg.offset,
                exc,
                extra=log_context(topic=msg.topic, partition=msg.partition, offset=msg.offset),
            )
        await health.on_agent_error(agent, exc)
        if faust_on_error is not None:
            await faust_on_error(agent, exc)

    process._on_error = on_agent_error  # type: ignore[attr-defined]
    app.process_agent = process  # type: ignore[attr-defined]
    return app
