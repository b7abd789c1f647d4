"""Replay benchmark: ``archive replay`` against the raw aiokafka producer sending the same records,
in one run (medians of --repeats runs), for archives of both input forms.

    python benchmarks/replay.py [--events 100000] [--engine kafka|embedded] [--repeats 3] [--json]

Two archives of the same events are written the way ``archive run`` writes them (records through
``extract`` into an ``ArchiveStore``, chunks of 10,000 records): one from a topic of single-event
records, one from a topic of publisher envelopes (``--envelope`` events each). Per repeat:

- ``raw``: an ``AIOKafkaProducer`` (the replay's producer settings and in-flight bound) sends the
  archived lines, read into memory beforehand, keyed by hubId, to a fresh topic, and waits for
  every acknowledgement;
- ``replay-<form>``: :class:`sinks.archive.replay.ReplayJob` replays that archive into a fresh
  topic (its own figure: from its producer's start to the last acknowledgement; reading and
  checking the chunks included, creating the topic not).

Figures are events per second; the ratio is replay over raw (the issue's target: >= 0.5).
Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the chosen local broker (Apache Kafka default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contest_telemetry.broker import make_broker
from contest_telemetry.schema import encode_envelope, ms_to_iso
from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import TopicSpec, ensure_topics
from sinks.archive.lines import extract
from sinks.archive.replay import ReplayJob, ReplaySettings, open_archive
from sinks.archive.store import ArchiveStore

PARTITIONS = 4
SOURCE = "contest.events"


def make_events(n: int) -> list[dict[str, Any]]:
    """Launched and resolved events of 64 hubs, a minute before now."""
    base = time.time() * 1000.0 - 60_000.0
    out: list[dict[str, Any]] = []
    for i in range(n):
        event: dict[str, Any] = {
            "message": "telemetry.contest.launched" if i % 2 == 0 else "telemetry.contest.resolved",
            "timestamp": ms_to_iso(base + i),
            "level": "info",
            "schemaVersion": 1,
            "hubId": f"hub-{i % 64}",
            "roomId": f"room-{i % 97}",
            "contestId": f"contest-{i // 2}",
            "contestKey": f"key-{i // 2}",
            "eventId": f"bench-{i}",
            "participantCount": 2,
            "participantCapacity": 4,
            "armingDurationMs": 100 + i % 5000,
        }
        if i % 2:
            event.update(outcomeTier="win", resolutionDurationMs=200 + i % 900)
        out.append(event)
    return out


def records(events: list[dict[str, Any]], form: str, per: int) -> list[tuple[int, bytes]]:
    """(partition, value) of the source topic in one form: one event per record, or envelopes of
    up to ``per`` consecutive events of a hub."""
    by_hub: dict[str, list[dict[str, Any]]] = {}
    out: list[tuple[int, bytes]] = []
    for ev in events:
        hub = ev["hubId"]
        partition = int(hub.split("-")[1]) % PARTITIONS
        if form == "single":
            out.append((partition, orjson.dumps(ev)))
            continue
        pending = by_hub.setdefault(hub, [])
        pending.append(ev)
        if len(pending) >= per:
            out.append((partition, encode_envelope(hub, pending)))
            by_hub[hub] = []
    for hub, pending in by_hub.items():
        if pending:
            out.append((int(hub.split("-")[1]) % PARTITIONS, encode_envelope(hub, pending)))
    return out


def write_archive(root: Path, values: list[tuple[int, bytes]]) -> int:
    offsets = [0] * PARTITIONS
    lines = 0
    with ArchiveStore(root, chunk_records=10_000) as store:
        for partition, value in values:
            got = extract("events", value, time.time() * 1000.0)
            store.add(SOURCE, partition, offsets[partition], time.time() * 1000.0, got.lines, got.skipped)
            offsets[partition] += 1
            lines += len(got.lines)
        store.flush_all()
    return lines


async def raw_run(kafka: KafkaSettings, lines: list[tuple[bytes, bytes]], settings: ReplaySettings) -> float:
    topic = f"bench.replay.raw.{uuid.uuid4().hex[:8]}"
    await ensure_topics(kafka, [TopicSpec(topic, PARTITIONS)])
    producer = AIOKafkaProducer(
        **kafka.aiokafka_kwargs(),  # type: ignore[arg-type]
        acks="all",
        linger_ms=settings.linger_ms,
        max_batch_size=settings.max_batch_bytes,
    )
    began = time.perf_counter()
    await producer.start()
    # The replay's flow control (at most max_in_flight unacknowledged, then down to half): a
    # send-everything-then-gather loop was measured slower, which would flatter the replay.
    pending: deque[asyncio.Future[Any]] = deque()
    limit = settings.max_in_flight
    try:
        for key, value in lines:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) > limit:
                while len(pending) > limit // 2:
                    await pending.popleft()
        while pending:
            await pending.popleft()
    finally:
        await producer.stop()
    return len(lines) / (time.perf_counter() - began)


async def replay_run(kafka: KafkaSettings, root: Path, expected: int, settings: ReplaySettings) -> float:
    job = ReplayJob(
        reader=open_archive(str(root), settings),
        kafka=kafka,
        target=f"bench.replay.{uuid.uuid4().hex[:8]}",
        source_topic=SOURCE,
        settings=settings,
    )
    stats = await job.run()
    assert stats.sent == expected, (stats.sent, expected)
    return stats.sent / stats.elapsed_s


async def bench(kafka: KafkaSettings, n: int, per: int, repeats: int, tmp: Path) -> dict[str, Any]:
    settings = ReplaySettings()
    events = make_events(n)
    roots: dict[str, Path] = {}
    for form in ("single", "envelope"):
        roots[form] = tmp / form
        assert write_archive(roots[form], records(events, form, per)) == n
    # The raw producer sends what the replay reads from the archive, in the archive's order.
    ordered = sorted(events, key=lambda ev: int(ev["hubId"].split("-")[1]) % PARTITIONS)
    lines = [(ev["hubId"].encode(), orjson.dumps(ev)) for ev in ordered]
    runs: dict[str, list[float]] = {"raw": [], "replay-single": [], "replay-envelope": []}
    names = list(runs)
    for repeat in range(repeats):
        # Each repeat starts with another run: the broker's state (segments, page cache) favours none.
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            if name == "raw":
                runs[name].append(await raw_run(kafka, lines, settings))
            else:
                runs[name].append(await replay_run(kafka, roots[name.removeprefix("replay-")], n, settings))
    med = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "events": n,
        "envelope": per,
        "repeats": repeats,
        "eventsPerSecond": {name: round(v) for name, v in med.items()},
        "replaySingleVsRaw": round(med["replay-single"] / med["raw"], 3),
        "replayEnvelopeVsRaw": round(med["replay-envelope"] / med["raw"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--envelope", type=int, default=50, help="events per envelope record")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=("kafka", "embedded"), default="kafka")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = make_broker(args.engine).start()
        bootstrap = broker.bootstrap
    try:
        with tempfile.TemporaryDirectory(prefix="replay-bench-") as tmp:
            report = asyncio.run(
                bench(
                    KafkaSettings(bootstrap_servers=bootstrap),
                    args.events,
                    args.envelope,
                    args.repeats,
                    Path(tmp),
                )
            )
    finally:
        if broker is not None:
            broker.stop()
    report["broker"] = args.engine if broker else "external"
    table = Table(
        title=f"archive replay vs raw aiokafka ({report['broker']}, {args.events:,} events, median of {args.repeats})"
    )
    table.add_column("run")
    table.add_column("events/s", justify="right")
    for name, rate in report["eventsPerSecond"].items():
        table.add_row(name, f"{rate:,}")
    console = Console(stderr=args.json)
    console.print(table)
    console.print(
        f"replay/raw: {report['replaySingleVsRaw']}x (archive of single events), "
        f"{report['replayEnvelopeVsRaw']}x (archive of envelopes); target >= 0.5x"
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
