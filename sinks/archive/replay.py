"""``archive replay SOURCE --to TOPIC``: publish an archive's events (or records) back into Kafka.

What it sends. Every line of the chunks the manifest lists for the chosen archived topic
(``--topic events``: CT_TOPIC_EVENTS, ``records``: CT_TOPIC_RECORDS, or ``--source-topic``), one
Kafka record per line, the line's bytes as they were archived (the event exactly as the hub sent
it, envelopes unpacked), keyed by its ``hubId``, with a ``ct-replay`` header naming where it came
from (``<topic>/<partition>/<chunk first offset>+<line>``). Partition by partition, chunks in
offset order, lines in file order: with the same number of partitions as the archived topic a hub
lands on the partition number it had, behind the same events in the same order.

Filters: ``--since`` / ``--until`` (ISO-8601, event time, ``since <= t < until``; events without a
timestamp are left out when either is given; chunks whose manifest times lie outside are not read)
and ``--hub`` (repeatable).

The target. A topic that does not exist is created with the archived topic's partition count (the
highest archived partition + 1; ``--partitions`` when the last partitions held no data). A
topic that already holds records is refused unless ``--force``: a worker deduplicates by source
partition and offset, not by ``eventId`` (see below), so a replay into a topic a worker has
already read is counted twice. A target with another partition count is replayed with a warning
(hubs change partitions: per-partition order and watermarks then differ from the original run).

Idempotence. Every archived line is sent once per run, with its original ``eventId``:

- the stream worker deduplicates by (source partition, offset) per hub, so it is exactly-once
  for the records it reads, and a replay is new records to it. The way to rebuild windows is a
  fresh topic and a fresh worker (its own ``CT_WORKER_APP_ID``) fed only by the replay: its windows
  equal the original run's (``tests/sinks/archive/test_replay_kafka.py``);
- consumers that deduplicate by ``eventId`` (contest.records consumers: a record's ``eventId`` is
  deterministic, streams/records.py) see a second replay of the same archive as duplicates to drop;
- the archive keeps what the original topic held, duplicates a publisher sent included (the
  original worker counted them too), so replay does not drop repeated ``eventId``s itself.

Records are sent with the current time as their Kafka timestamp, so the target's retention
counts from the replay; a worker with ``CT_EVENT_TIME_MAX_PAST_S`` set dead-letters replayed
events older than that (unset it for a rebuild).

Integrity: each chunk's size and sha256 are checked against the manifest before it is read, and
its line count after; a recorded gap is reported (its offsets were never archived). A mismatch
stops the replay with one line saying how many events were already sent.

Exit codes: 0 done; 1 refused (target holds data), broken archive or Kafka error; 2 bad flags.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contest_telemetry.cli.parser import iso_time_ms, positive_int
from contest_telemetry.exceptions import ConfigError
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import TopicSpec, await_partitions, connect_admin, ensure_topics
from sinks.archive.exceptions import ArchiveError
from sinks.archive.lines import Kind, event_time_ms
from sinks.archive.manifest import ManifestEntry
from sinks.archive.reader import open_reader

__all__ = [
    "REPLAY_HEADER",
    "ArchiveReader",
    "ReplayError",
    "ReplayFilter",
    "ReplayJob",
    "ReplaySettings",
    "ReplayStats",
    "TargetNotEmptyError",
    "open_archive",
    "replay",
]

REPLAY_HEADER = "ct-replay"


class ReplaySettings(BaseSettings):
    """How ``archive replay`` sends (env prefix ``CT_REPLAY_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_REPLAY_", extra="ignore", allow_inf_nan=False)

    max_in_flight: int = Field(
        default=20_000,
        ge=1,
        le=10_000_000,
        description="Most records sent and not yet acknowledged; the replay waits for the oldest "
        "beyond it (counted in the summary's inFlightWaits). Bounds its memory.",
    )
    linger_ms: int = Field(default=20, ge=0, le=10_000, description="Producer linger before a batch is sent.")
    max_batch_bytes: int = Field(
        default=1 << 20, ge=1024, le=64 << 20, description="Producer batch size per partition (bytes)."
    )
    max_line_bytes: int = Field(
        default=4 << 20,
        ge=1024,
        description="Longest archived line read; a longer one stops the replay (archived lines come "
        "from records of at most the topic's max.message.bytes).",
    )
    progress_interval_s: float = Field(
        default=5.0, gt=0, description="Progress line period on stderr when it is not a terminal."
    )


class ReplayError(ArchiveError):
    """The replay cannot go on: a broken archive, a Kafka error."""


class TargetNotEmptyError(ReplayError):
    """The target topic already holds records and ``--force`` was not given."""


# -- reading the archive ---------------------------------------------------------------------------
class ArchiveReader(Protocol):
    """What replay needs of an archive: its manifest entries and the lines of a chunk."""

    location: str

    def entries(self) -> list[ManifestEntry]: ...

    def lines(self, entry: ManifestEntry) -> Iterator[bytes]: ...


def open_archive(source: str, settings: ReplaySettings | None = None) -> ArchiveReader:
    """The archive at ``source`` (a directory or ``s3://bucket/prefix``); the one place replay
    touches archive storage (sinks/archive/reader.py: sizes, sha256 and line counts checked)."""
    return open_reader(source, max_line_bytes=(settings or ReplaySettings()).max_line_bytes)


# -- the replay ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReplayFilter:
    since_ms: float | None = None
    until_ms: float | None = None
    hubs: frozenset[str] = frozenset()

    @property
    def timed(self) -> bool:
        return self.since_ms is not None or self.until_ms is not None

    def wants_chunk(self, entry: ManifestEntry) -> bool:
        """False when the manifest's event times show no line of the chunk is in the time range."""
        if not self.timed:
            return True
        low = event_time_ms(entry.min_event_time, math.nan)
        high = event_time_ms(entry.max_event_time, math.nan)
        if math.isnan(low) or math.isnan(high):
            return True
        if self.since_ms is not None and high < self.since_ms:
            return False
        return not (self.until_ms is not None and low >= self.until_ms)

    def wants(self, obj: dict[str, Any]) -> str | None:
        """None when the line is replayed, else the reason it is not (``time`` or ``hub``)."""
        if self.hubs and obj.get("hubId") not in self.hubs:
            return "hub"
        if self.timed:
            t = event_time_ms(obj.get("timestamp"), math.nan)
            if math.isnan(t):
                return "time"
            if self.since_ms is not None and t < self.since_ms:
                return "time"
            if self.until_ms is not None and t >= self.until_ms:
                return "time"
        return None


@dataclass
class ReplayStats:
    source: str = ""
    source_topic: str = ""
    target: str = ""
    kind: str = "events"
    chunks: int = 0  # chunks read
    chunks_skipped: int = 0  # chunks left out by their manifest times
    gaps: int = 0  # recorded gaps of the source topic (offsets that were never archived)
    lines: int = 0  # lines read
    sent: int = 0  # records sent and acknowledged
    filtered_time: int = 0
    filtered_hub: int = 0
    not_objects: int = 0  # lines that are not JSON objects (never in a verified archive)
    bytes: int = 0  # value bytes sent
    in_flight_waits: int = 0  # times the CT_REPLAY_MAX_IN_FLIGHT bound made the replay wait
    target_partitions: int = 0
    source_partitions: int = 0
    target_created: bool = False
    target_held: int = 0  # records the target held before (replayed anyway with --force)
    by_partition: dict[int, int] = field(default_factory=dict)  # source partition -> records sent
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "sourceTopic": self.source_topic,
            "target": self.target,
            "kind": self.kind,
            "chunks": self.chunks,
            "chunksSkipped": self.chunks_skipped,
            "gaps": self.gaps,
            "lines": self.lines,
            "sent": self.sent,
            "filteredTime": self.filtered_time,
            "filteredHub": self.filtered_hub,
            "notObjects": self.not_objects,
            "bytes": self.bytes,
            "inFlightWaits": self.in_flight_waits,
            "targetPartitions": self.target_partitions,
            "sourcePartitions": self.source_partitions,
            "targetCreated": self.target_created,
            "targetHeld": self.target_held,
            "byPartition": {str(p): n for p, n in sorted(self.by_partition.items())},
            "elapsedSeconds": round(self.elapsed_s, 3),
            "eventsPerSecond": round(self.sent / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
        }


class Progress(Protocol):
    def start(self, total: int) -> None: ...
    def advance(self, done: int) -> None: ...
    def stop(self) -> None: ...


@dataclass
class ReplayJob:
    """What one ``archive replay`` does."""

    reader: ArchiveReader
    kafka: KafkaSettings
    target: str
    source_topic: str
    kind: Kind = "events"
    filter: ReplayFilter = field(default_factory=ReplayFilter)
    force: bool = False
    settings: ReplaySettings = field(default_factory=ReplaySettings)
    replication_factor: int = 1
    partitions: int | None = None  # of a target created here (None: the archived topic's count)
    progress: Progress | None = None
    warn: IO[str] | None = None

    def _plan(self, stats: ReplayStats) -> dict[int, list[ManifestEntry]]:
        entries = self.reader.entries()
        mine = [e for e in entries if e.topic == self.source_topic]
        if not mine:
            topics = sorted({e.topic for e in entries})
            raise ReplayError(
                f"{self.reader.location} holds no chunks of {self.source_topic!r} "
                f"(topics in it: {', '.join(topics) or 'none'})"
            )
        plan: dict[int, list[ManifestEntry]] = {}
        for entry in mine:
            if entry.is_gap:
                stats.gaps += 1
                continue
            plan.setdefault(entry.partition, []).append(entry)
        for chunks in plan.values():
            chunks.sort(key=lambda e: (e.first_offset, e.last_offset))
        stats.source_partitions = max(e.partition for e in mine) + 1
        return dict(sorted(plan.items()))

    def _note(self, message: str) -> None:
        if self.warn is not None:
            print(f"archive: {message}", file=self.warn, flush=True)

    async def _prepare_target(self, stats: ReplayStats) -> None:
        """Create the target if it is missing; refuse one that holds records unless ``force``."""
        admin = await connect_admin(self.kafka)
        try:
            exists = self.target in set(await admin.list_topics())
        finally:
            await admin.close()
        if not exists:
            count = self.partitions or stats.source_partitions
            await ensure_topics(self.kafka, [TopicSpec(self.target, count, self.replication_factor)])
            stats.target_created = True
        consumer = AIOKafkaConsumer(**self.kafka.aiokafka_kwargs(), enable_auto_commit=False)  # type: ignore[arg-type]
        await consumer.start()
        try:
            partitions = (await await_partitions(consumer, [self.target]))[self.target]
            if not partitions:
                raise ReplayError(f"topic {self.target!r} does not show up on {self.kafka.bootstrap_servers}")
            tps = [TopicPartition(self.target, p) for p in sorted(partitions)]
            starts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        stats.target_partitions = len(tps)
        stats.target_held = sum(ends[tp] - starts[tp] for tp in tps)
        if stats.target_held and not self.force:
            raise TargetNotEmptyError(
                f"topic {self.target!r} already holds {stats.target_held} record(s); a worker that read them "
                "would count replayed events twice (give --force to replay into it anyway)"
            )
        if stats.target_partitions != (self.partitions or stats.source_partitions):
            self._note(
                f"warning: {self.target!r} has {stats.target_partitions} partition(s), the archived "
                f"{self.source_topic!r} had {self.partitions or stats.source_partitions}: hubs land on "
                "other partitions, so per-partition order and watermarks differ from the original run"
            )

    async def run(self) -> ReplayStats:
        stats = ReplayStats(
            source=self.reader.location, source_topic=self.source_topic, target=self.target, kind=self.kind
        )
        plan = self._plan(stats)
        if stats.gaps:
            self._note(
                f"{stats.gaps} recorded gap(s) in {self.source_topic!r}: offsets deleted before they were "
                "archived cannot be replayed"
            )
        await self._prepare_target(stats)
        wanted = [e for chunks in plan.values() for e in chunks if self.filter.wants_chunk(e)]
        stats.chunks_skipped = sum(len(chunks) for chunks in plan.values()) - len(wanted)
        if self.progress is not None:
            self.progress.start(sum(e.lines for e in wanted))
        producer = AIOKafkaProducer(
            **self.kafka.aiokafka_kwargs(),  # type: ignore[arg-type]
            client_id=f"{self.kafka.client_id}-replay",
            acks="all",
            linger_ms=self.settings.linger_ms,
            max_batch_size=self.settings.max_batch_bytes,
        )
        started = time.monotonic()
        await producer.start()
        pending: deque[asyncio.Future[Any]] = deque()
        try:
            for entry in wanted:
                await self._send_chunk(producer, entry, pending, stats)
            while pending:
                await pending.popleft()
                stats.sent += 1
        except ArchiveError as error:  # a chunk that is not what its manifest says, or ours
            raise ReplayError(f"{error} ({stats.sent} record(s) sent before)") from None
        finally:
            for future in pending:
                future.cancel()
            with contextlib.suppress(Exception):
                await producer.stop()
            stats.elapsed_s = time.monotonic() - started
            if self.progress is not None:
                self.progress.stop()
        return stats

    async def _send_chunk(
        self,
        producer: AIOKafkaProducer,
        entry: ManifestEntry,
        pending: deque[asyncio.Future[Any]],
        stats: ReplayStats,
    ) -> None:
        where = f"{self.source_topic}/{entry.partition}/{entry.first_offset}+"
        limit = self.settings.max_in_flight
        # Without a filter, every line goes: no per-line call to ask.
        wants = self.filter.wants if self.filter.hubs or self.filter.timed else None
        send = producer.send
        loads = orjson.loads
        stats.chunks += 1
        sent_here = 0
        for number, line in enumerate(self.reader.lines(entry)):
            stats.lines += 1
            try:
                obj = loads(line)
            except orjson.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                stats.not_objects += 1
                continue
            why = wants(obj) if wants is not None else None
            if why is not None:
                if why == "hub":
                    stats.filtered_hub += 1
                else:
                    stats.filtered_time += 1
                continue
            hub = obj.get("hubId")
            key = hub.encode() if isinstance(hub, str) else None
            pending.append(
                await send(self.target, line, key=key, headers=[(REPLAY_HEADER, f"{where}{number}".encode())])
            )
            stats.bytes += len(line)
            sent_here += 1
            if len(pending) > limit:
                stats.in_flight_waits += 1
                while len(pending) > limit // 2:
                    await pending.popleft()
                    stats.sent += 1
                if self.progress is not None:
                    self.progress.advance(stats.lines)
        stats.by_partition[entry.partition] = stats.by_partition.get(entry.partition, 0) + sent_here
        if self.progress is not None:
            self.progress.advance(stats.lines)


def replay(job: ReplayJob) -> ReplayStats:
    """Run a replay to completion in a fresh event loop."""
    try:
        return asyncio.run(job.run())
    finally:
        sys.stderr.flush()


def source_topic_for(kind: Kind, topics: TopicSettings, override: str | None) -> str:
    """The archived topic to replay: ``override``, else the topic settings' name for ``kind``."""
    if override:
        return override
    return topics.events if kind == "events" else topics.records


# -- command line (``archive replay``; sinks/archive/cli.py registers it) ----------------------------
class _RichProgress:
    """A rich progress bar on a terminal; elsewhere a plain line every ``interval`` seconds."""

    def __init__(self, stream: IO[str], interval: float) -> None:
        self.stream = stream
        self.interval = interval
        self.total = 0
        self.started = self.last = time.monotonic()
        self._bar: Any = None
        self._task: Any = None

    def start(self, total: int) -> None:
        self.total = total
        self.started = self.last = time.monotonic()
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self._bar = Progress(
                "replay",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._bar.start()
            self._task = self._bar.add_task("replay", total=total)

    def advance(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            rate = done / max(now - self.started, 1e-9)
            print(
                f"archive: replay {done}/{self.total} lines read ({rate:,.0f}/s)",
                file=self.stream,
                flush=True,
            )

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def add_replay_arguments(commands: Any) -> None:
    """``replay`` on the ``archive`` subcommands."""
    p = commands.add_parser(
        "replay", help="publish an archive's events (or records) into a topic", allow_abbrev=False
    )
    p.add_argument("source", metavar="SOURCE", help="archive root: a directory or s3://bucket/prefix")
    p.add_argument("--to", metavar="TOPIC", required=True, help="topic to publish to")
    p.add_argument("--topic", choices=("events", "records"), default="events", help="what to replay (events)")
    p.add_argument(
        "--source-topic",
        metavar="TOPIC",
        help="archived topic name (default CT_TOPIC_EVENTS / CT_TOPIC_RECORDS)",
    )
    p.add_argument("--since", metavar="TIME", help="only events at or after this ISO-8601 event time")
    p.add_argument("--until", metavar="TIME", help="only events before this ISO-8601 event time")
    p.add_argument("--hub", metavar="HUB", action="append", help="only this hubId (repeatable)")
    p.add_argument("--force", action="store_true", help="replay into a topic that already holds records")
    p.add_argument(
        "--partitions",
        metavar="N",
        type=positive_int,
        help="partitions of the archived topic (default: the highest archived partition + 1); a "
        "missing target is created with them",
    )
    p.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")


def build_job(args: Any, warn: IO[str]) -> ReplayJob:
    """The job of parsed ``archive replay`` flags; :class:`ConfigError` (one line) for a bad one."""
    from pydantic import ValidationError

    from contest_telemetry.settings import settings_error_line

    since = iso_time_ms("--since", args.since)
    until = iso_time_ms("--until", args.until)
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--until ({args.until}) must be after --since ({args.since})")
    if not str(args.source).strip():
        raise ConfigError("SOURCE must not be empty")
    hubs = [h for h in (args.hub or [])]
    if any(not h for h in hubs):
        raise ConfigError("--hub must not be empty")
    try:
        kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap is not None else {}))
        topics = TopicSettings()
        settings = ReplaySettings()
        reader = open_archive(args.source, settings)  # reads CT_ARCHIVE_S3_* for an s3:// SOURCE
    except ValidationError as error:
        raise ConfigError(settings_error_line(error)) from None
    for flag, name in (("--to", args.to), ("--source-topic", args.source_topic)):
        if name is None:
            continue
        try:
            TopicSettings(events=name)
        except ValidationError:
            raise ConfigError(f"{flag}: not a Kafka topic name: {name!r}") from None
    kind: Kind = "records" if args.topic == "records" else "events"
    return ReplayJob(
        reader=reader,
        kafka=kafka,
        target=args.to,
        source_topic=source_topic_for(kind, topics, args.source_topic),
        kind=kind,
        filter=ReplayFilter(since, until, frozenset(hubs)),
        force=bool(args.force),
        settings=settings,
        replication_factor=topics.replication_factor,
        partitions=args.partitions,
        progress=_RichProgress(warn, settings.progress_interval_s),
        warn=warn,
    )


def render_stats(stats: ReplayStats, out: IO[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    data = stats.as_dict()
    table = Table()
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in (
        "source",
        "kind",
        "chunks",
        "chunksSkipped",
        "gaps",
        "lines",
        "sent",
        "filteredTime",
        "filteredHub",
        "notObjects",
        "bytes",
        "inFlightWaits",
        "sourcePartitions",
        "targetPartitions",
        "targetCreated",
        "targetHeld",
        "elapsedSeconds",
        "eventsPerSecond",
    ):
        table.add_row(key, str(data[key]))
    for partition, count in data["byPartition"].items():
        table.add_row(f"sent from partition {partition}", str(count))
    console = Console(file=out, width=None if out.isatty() else 120, highlight=False, markup=False)
    console.print(f"archive replay: {stats.source_topic} -> {stats.target}", markup=False)
    console.print(table)
