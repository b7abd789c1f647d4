"""The archiver's consume loop: Kafka records -> :class:`ArchiveStore` -> offset commits.

Partitions are assigned manually (every partition of the archived topics) rather than through
group membership: the manifest, not the group, says where each partition resumes, one process
writes a directory (it is locked), and a restart after a crash starts consuming at once instead of
waiting for the dead member's session to expire. Offsets are still committed to the archiver's
own group after each chunk is in the manifest, so the usual lag tooling shows how far it is.

Partitions added to the topics while it runs are found by a metadata refresh every
``partition_refresh`` seconds and archived from their first offset (no restart needed).

The consumer never resets an offset by itself (``auto_offset_reset="none"``): when the offset it
wants is gone (retention deleted it before it was read, while running or while stopped), the
fetch fails and the archiver records a ``gap`` in the manifest for the deleted offsets, logs it at
WARNING, counts it (``gaps`` / ``missingOffsets``), and goes on from the log start. No chunk
claims an offset it did not read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from contest_telemetry.logs import log_context
from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import await_partitions, topic_partitions
from sinks.archive.exceptions import ArchiveError
from sinks.archive.lines import Kind, extract
from sinks.archive.manifest import ManifestEntry
from sinks.archive.metrics import ArchiveObserver
from sinks.archive.store import ArchiveStore, crash_point

__all__ = ["ArchiveRun", "ArchiveStats", "run_archiver"]

log = logging.getLogger(__name__)


@dataclass
class ArchiveStats:
    records: int = 0
    lines: int = 0
    invalid_events: int = 0
    junk_records: int = 0
    files: int = 0
    bytes: int = 0
    commit_failures: int = 0
    removed_unlisted: int = 0
    gaps: int = 0  # gaps recorded in the manifest by this run (offsets deleted before they were read)
    missing_offsets: int = 0  # offsets in those gaps
    new_partitions: int = 0  # partitions picked up while running
    storage_retries: int = 0  # object-store requests retried (CT_ARCHIVE_S3_MAX_RETRIES bounds each)
    by_topic: dict[str, dict[str, int]] = field(default_factory=dict)
    stopped_by: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "lines": self.lines,
            "invalidEvents": self.invalid_events,
            "junkRecords": self.junk_records,
            "files": self.files,
            "bytes": self.bytes,
            "commitFailures": self.commit_failures,
            "removedUnlisted": self.removed_unlisted,
            "gaps": self.gaps,
            "missingOffsets": self.missing_offsets,
            "newPartitions": self.new_partitions,
            "storageRetries": self.storage_retries,
            "byTopic": self.by_topic,
            "stoppedBy": self.stopped_by,
        }


@dataclass
class ArchiveRun:
    """What one ``archive run`` does."""

    store: ArchiveStore
    kafka: KafkaSettings
    topics: dict[str, Kind]  # topic name -> what it holds
    group_id: str
    stop_after_idle: float | None = None
    idle_flush: float | None = 300.0  # close a chunk after no record this long (None: never)
    max_chunk_age: float | None = 3600.0  # close a chunk once open this long (None: never)
    partition_refresh: float = 30.0  # look for new partitions this often
    progress: IO[str] | None = None
    progress_interval: float = 5.0
    stats: ArchiveStats = field(default_factory=ArchiveStats)
    observer: ArchiveObserver | None = None  # metrics and health (sinks/archive/metrics.py)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _assigned: list[TopicPartition] = field(default_factory=list)

    def request_stop(self, reason: str = "signal") -> None:
        if not self.stats.stopped_by:
            self.stats.stopped_by = reason
        self._stop.set()

    # -----------------------------------------------------------------------------------------
    async def _topic_partitions(self, consumer: AIOKafkaConsumer) -> dict[str, set[int]]:
        return await topic_partitions(consumer, self.topics)

    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        found = await await_partitions(consumer, self.topics, interval_s=0.5)
        missing = [topic for topic, partitions in found.items() if not partitions]
        if missing:
            raise ArchiveError(f"topic {missing[0]!r} does not exist on {self.kafka.bootstrap_servers}")
        await self._reassign(consumer, found)
        return self._assigned

    async def _reassign(self, consumer: AIOKafkaConsumer, found: dict[str, set[int]]) -> None:
        """Assign every partition of ``found``; each resumes where the store expects it."""
        tps = [TopicPartition(topic, p) for topic in self.topics for p in sorted(found.get(topic, ()))]
        # assign() forgets every position: all are set again before the next await, so the
        # fetcher never looks one up by itself.
        consumer.assign(tps)
        fresh: list[TopicPartition] = []
        for tp in tps:
            resume = self.store.read_position(tp.topic, tp.partition)
            if resume is None:
                fresh.append(tp)
            else:
                # Below the log start (retention), the fetch fails and _out_of_range records the gap.
                consumer.seek(tp, resume)
        self._assigned = tps
        if self.observer is not None:
            self.observer.assigned(tps)
        if fresh:
            await consumer.seek_to_beginning(*fresh)

    async def _refresh_partitions(self, consumer: AIOKafkaConsumer) -> None:
        try:
            found = await self._topic_partitions(consumer)
        except Exception as error:  # a metadata hiccup: try again next time
            log.warning("looking for new partitions failed (will retry): %r", error)
            return
        for tp in self._assigned:  # partitions never go away; a topic missing for a moment neither
            found.setdefault(tp.topic, set()).add(tp.partition)
        new = [
            f"{topic}[{p}]"
            for topic in self.topics
            for p in sorted(found.get(topic, ()))
            if TopicPartition(topic, p) not in self._assigned
        ]
        if not new:
            return
        self.stats.new_partitions += len(new)
        if self.progress is not None:
            print(
                f"archive: new partition(s) {', '.join(new)}: archiving them", file=self.progress, flush=True
            )
        await self._reassign(consumer, found)

    async def _out_of_range(
        self, consumer: AIOKafkaConsumer, wanted: dict[TopicPartition, int]
    ) -> list[ManifestEntry]:
        """The broker no longer (or not yet) has the offsets these partitions asked for."""
        tps = list(wanted)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        closed: list[ManifestEntry] = []
        for tp in tps:
            start, end = starts[tp], ends[tp]
            expected = self.store.read_position(tp.topic, tp.partition)
            if expected is None:
                # Nothing read from this partition yet: its archive starts where its data starts.
                consumer.seek(tp, start)
            elif expected < start:
                log.warning(
                    "%s[%d]: offsets %d..%d were deleted (retention) before they were archived; "
                    "recorded as a gap in the manifest, going on from %d",
                    tp.topic,
                    tp.partition,
                    expected,
                    start - 1,
                    start,
                    extra=log_context(
                        topic=tp.topic, partition=tp.partition, first_offset=expected, last_offset=start - 1
                    ),
                )
                closed += self.store.record_gap(tp.topic, tp.partition, expected, start - 1, "retention")
                self.stats.gaps += 1
                self.stats.missing_offsets += start - expected
                consumer.seek(tp, start)
            else:
                # Beyond the end (a log truncated by an unclean leader election, a re-created topic)
                # or a leader change in progress: never skip anything, ask again.
                log.warning(
                    "%s[%d]: offset %d is out of range (the log holds %d..%d); retrying",
                    tp.topic,
                    tp.partition,
                    wanted[tp],
                    start,
                    end - 1,
                )
                consumer.seek(tp, expected)
                await asyncio.sleep(1.0)
        return closed

    async def _commit(self, consumer: AIOKafkaConsumer, entries: list[ManifestEntry]) -> None:
        self.stats.storage_retries = self.store.storage_retries
        if not entries:
            return
        for entry in entries:
            self.stats.files += 1
            self.stats.bytes += entry.size
        if self.observer is not None:
            self.observer.committed(entries)
        offsets = {TopicPartition(e.topic, e.partition): e.last_offset + 1 for e in entries}
        try:
            await consumer.commit(offsets)
        except Exception as error:  # advisory: the manifest is the position
            self.stats.commit_failures += 1
            log.warning("offset commit failed (the manifest still holds the position): %r", error)
        crash_point("after-commit")

    def _count(self, topic: str, lines: int, invalid: int, junk: int) -> None:
        self.stats.records += 1
        self.stats.lines += lines
        self.stats.invalid_events += invalid
        self.stats.junk_records += junk
        counts = self.stats.by_topic.setdefault(
            topic, {"records": 0, "lines": 0, "invalidEvents": 0, "junkRecords": 0}
        )
        counts["records"] += 1
        counts["lines"] += lines
        counts["invalidEvents"] += invalid
        counts["junkRecords"] += junk

    def _report(self, started: float) -> None:
        if self.progress is None:
            return
        s = self.stats
        elapsed = max(time.monotonic() - started, 1e-9)
        lost = f" ({s.missing_offsets} offsets deleted by retention before archiving)" if s.gaps else ""
        print(
            f"archive: {s.records} records, {s.lines} lines ({s.lines / elapsed:,.0f}/s), "
            f"{s.files} files, {s.invalid_events + s.junk_records} skipped, {s.gaps} gap(s){lost}",
            file=self.progress,
            flush=True,
        )

    async def run(self) -> ArchiveStats:
        self.stats.removed_unlisted = len(self.store.removed)
        consumer = AIOKafkaConsumer(
            **self.kafka.aiokafka_kwargs(),  # type: ignore[arg-type]
            client_id=f"{self.kafka.client_id}-archiver",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="none",  # a deleted offset is a gap to record, not to skip silently
            isolation_level="read_committed",
        )
        graceful = False
        try:
            await consumer.start()
            await self._assign(consumer)
            started = last_report = last_data = last_refresh = time.monotonic()
            last_seen: dict[tuple[str, int], float] = {}
            while not self._stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                except OffsetOutOfRangeError as error:
                    wanted = error.args[0] if error.args and isinstance(error.args[0], dict) else None
                    if not wanted:
                        raise
                    await self._commit(consumer, await self._out_of_range(consumer, wanted))
                    continue
                now = time.monotonic()
                closed: list[ManifestEntry] = []
                for tp, records in batch.items():
                    kind = self.topics[tp.topic]
                    for record in records:
                        got = extract(kind, record.value, float(record.timestamp))
                        self._count(tp.topic, len(got.lines), got.invalid_events, got.junk_records)
                        closed += self.store.add(
                            tp.topic,
                            tp.partition,
                            record.offset,
                            float(record.timestamp),
                            got.lines,
                            got.skipped,
                        )
                    if records:
                        last_seen[(tp.topic, tp.partition)] = now
                        last_data = now
                for key in self.store.open_chunks():
                    idle = self.idle_flush is not None and now - last_seen.get(key, now) >= self.idle_flush
                    opened = self.store.opened_at(*key)
                    old = (
                        self.max_chunk_age is not None
                        and opened is not None
                        and now - opened >= self.max_chunk_age
                    )
                    if idle or old:
                        entry = self.store.flush(*key)
                        if entry is not None:
                            closed.append(entry)
                await self._commit(consumer, closed)
                if self.observer is not None:
                    self.observer.tick(consumer, self.store, self._assigned)
                if now - last_refresh >= self.partition_refresh:
                    await self._refresh_partitions(consumer)
                    last_refresh = now
                if self.progress_interval > 0 and now - last_report >= self.progress_interval:
                    self._report(started)
                    last_report = now
                if self.stop_after_idle is not None and now - last_data >= self.stop_after_idle:
                    self.request_stop("idle")
            graceful = True
            # Graceful stop: the open chunks' tails reach disk as files ending at the last offset
            # consumed; the next run starts each partition at last + 1.
            await self._commit(consumer, self.store.flush_all())
            self._report(started)
        finally:
            if not graceful:
                self.store.close()  # drops open chunks: they will be read again
            with contextlib.suppress(Exception):
                await consumer.stop()
        return self.stats


def run_archiver(run: ArchiveRun, *, install_signals: bool = True) -> ArchiveStats:
    """Run to completion in a fresh event loop; SIGTERM/SIGINT stop it gracefully."""

    async def main() -> ArchiveStats:
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
                loop.add_signal_handler(sig, run.request_stop, name)
        return await run.run()

    try:
        return asyncio.run(main())
    finally:
        run.store.close()
        sys.stderr.flush()
