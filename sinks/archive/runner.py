"""The archiver's consume loop: Kafka records -> :class:`ArchiveStore` -> offset commits.

Partitions are assigned manually (every partition of the archived topics) rather than through
group membership: the manifest, not the group, says where each partition resumes, one process
writes a directory (it is locked), and a restart after a crash starts consuming at once instead of
waiting for the dead member's session to expire. Offsets are still committed to the archiver's
own group after each chunk is in the manifest, so the usual lag tooling shows how far it is.
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

from contest_telemetry.settings import KafkaSettings
from sinks.archive.exceptions import ArchiveError
from sinks.archive.lines import Kind, extract
from sinks.archive.manifest import ManifestEntry
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
    idle_flush: float | None = None
    progress: IO[str] | None = None
    progress_interval: float = 5.0
    stats: ArchiveStats = field(default_factory=ArchiveStats)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def request_stop(self, reason: str = "signal") -> None:
        if not self.stats.stopped_by:
            self.stats.stopped_by = reason
        self._stop.set()

    # -----------------------------------------------------------------------------------------
    async def _assign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        tps: list[TopicPartition] = []
        deadline = time.monotonic() + 10.0
        while True:
            # A full metadata fetch (the consumer's own cache only knows subscribed topics); a
            # topic created a moment ago may take a few seconds to show up everywhere.
            cluster = await consumer._client.fetch_all_metadata()
            missing = [topic for topic in self.topics if not cluster.partitions_for_topic(topic)]
            if not missing:
                break
            if time.monotonic() >= deadline:
                raise ArchiveError(f"topic {missing[0]!r} does not exist on {self.kafka.bootstrap_servers}")
            await asyncio.sleep(0.5)
        for topic in self.topics:
            partitions = cluster.partitions_for_topic(topic) or set()
            tps.extend(TopicPartition(topic, p) for p in sorted(partitions))
        consumer.assign(tps)
        beginning = await consumer.beginning_offsets(tps)
        for tp in tps:
            resume = self.store.next_offset(tp.topic, tp.partition)
            if resume is None:
                await consumer.seek_to_beginning(tp)
            elif resume < beginning[tp]:
                log.warning(
                    "%s[%d]: offsets %d..%d are gone from the broker (retention); the archive has a gap",
                    tp.topic,
                    tp.partition,
                    resume,
                    beginning[tp] - 1,
                )
                self.store.forget(tp.topic, tp.partition)
                consumer.seek(tp, beginning[tp])
            else:
                consumer.seek(tp, resume)
        return tps

    async def _commit(self, consumer: AIOKafkaConsumer, entries: list[ManifestEntry]) -> None:
        if not entries:
            return
        for entry in entries:
            self.stats.files += 1
            self.stats.bytes += entry.size
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
        print(
            f"archive: {s.records} records, {s.lines} lines ({s.lines / elapsed:,.0f}/s), "
            f"{s.files} files, {s.invalid_events + s.junk_records} skipped",
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
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        graceful = False
        try:
            await consumer.start()
            await self._assign(consumer)
            started = last_report = last_data = time.monotonic()
            last_seen: dict[tuple[str, int], float] = {}
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
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
                if self.idle_flush is not None:
                    for key in self.store.open_chunks():
                        if now - last_seen.get(key, now) >= self.idle_flush:
                            entry = self.store.flush(*key)
                            if entry is not None:
                                closed.append(entry)
                await self._commit(consumer, closed)
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
