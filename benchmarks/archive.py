"""Benchmark the archiver's write path against plain ``gzip`` + ``json`` writing the same lines.

No broker: prepared Kafka record values (envelopes of ``--envelope`` events, and single events,
as ``contest.events`` carries them, plus ``contest.records`` values) are fed, in one process and
one run, through:

- ``archiver``: what ``archive run`` does per consumed record -- decode, validate every event
  against the contract, unpack envelopes, gzip NDJSON chunks (10,000 records each, fsync, rename,
  manifest line + fsync);
- ``archiver-no-fsync``: the same with fsync turned into a no-op (the cost of durability);
- ``archiver-s3``: the same archiver writing to ``s3://bench/run-N`` on a local S3Proxy
  (tests/helpers/s3proxy.py, needs Java and Maven; ``--no-s3`` skips it): each chunk one PUT, then
  its manifest entry object, best of ``--s3-rounds`` runs interleaved with as many local ones;
  ``s3VsLocal`` is its rate over the best local rate of the same run;
- ``baseline``: ``gzip.open`` + ``json.dumps`` of the same line objects into one file.

Figures are lines per second (a line is one archived event or record). The Kafka consumer itself
is not measured.

Usage: ``.venv/bin/python benchmarks/archive.py [--lines N] [--envelope N] [--level N] [--json]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sinks.archive.lines import Kind, extract
from sinks.archive.store import ArchiveStore

MESSAGES = ("launched", "workflowStarted", "resolved", "workflowFailed")


def make_event(rng: random.Random, n: int) -> dict[str, Any]:
    message = rng.choice(MESSAGES)
    hub = f"hub-{n % 16}"
    event: dict[str, Any] = {
        "message": f"telemetry.contest.{message}",
        "timestamp": f"2025-11-04T{(n // 60000) % 24:02d}:{(n // 1000) % 60:02d}:{n % 60:02d}.000Z",
        "level": "error" if message == "workflowFailed" else "info",
        "schemaVersion": 1,
        "hubId": hub,
        "roomId": f"room-{n % 97}",
        "contestId": f"contest-{n // 4}",
        "contestKey": f"key-{n // 4}",
        "eventId": f"bench-{n}",
    }
    if message == "launched":
        event.update(
            participantCount=rng.randint(1, 4), participantCapacity=4, armingDurationMs=rng.randint(0, 9000)
        )
        event.update(label="duel", move="strike", type="pvp", moderationTags=["hub-pvp"])
    elif message == "workflowStarted":
        event.update(workflowId=f"wf-{n}", runId=None)
    elif message == "resolved":
        event.update(
            participantCount=2,
            participantCapacity=4,
            outcomeTier="win",
            sharedComplicationCount=0,
            armingDurationMs=rng.randint(0, 9000),
            resolutionDurationMs=rng.randint(0, 1200),
        )
    else:
        event.update(error="workflow_failed")
    return event


def prepare(
    lines: int, envelope: int, seed: int = 7
) -> tuple[list[tuple[Kind, bytes]], list[dict[str, Any]]]:
    """Kafka record values and, in the same order, the line objects they hold."""
    rng = random.Random(seed)
    records: list[tuple[Kind, bytes]] = []
    objects: list[dict[str, Any]] = []
    n = 0
    while n < lines:
        if n % 10 == 9:  # a contest record
            value = {
                "message": "telemetry.contest.record",
                "timestamp": "2025-11-04T08:00:00.000Z",
                "hubId": f"hub-{n % 16}",
                "contestId": f"contest-{n}",
                "eventId": f"rec-{n}",
                "lifecycle": "resolved",
                "armingDurationMs": 10,
                "resolutionDurationMs": 20,
            }
            records.append(("records", orjson.dumps(value)))
            objects.append(value)
            n += 1
        elif rng.random() < 0.2:
            event = make_event(rng, n)
            records.append(("events", orjson.dumps(event)))
            objects.append(event)
            n += 1
        else:
            batch = [make_event(rng, n + i) for i in range(min(envelope, lines - n))]
            body = {
                "message": "telemetry.contest.batch",
                "schemaVersion": 1,
                "hubId": "hub-1",
                "events": batch,
            }
            records.append(("events", orjson.dumps(body)))
            objects.extend(batch)
            n += len(batch)
    return records, objects


@contextmanager
def no_fsync() -> Any:
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def run_archiver(records: list[tuple[Kind, bytes]], root: Path | str, level: int) -> int:
    topics = {"events": "contest.events", "records": "contest.records"}
    offsets = {"events": 0, "records": 0}
    lines = 0
    with ArchiveStore(root, chunk_records=10_000, compress_level=level) as store:
        for kind, value in records:
            got = extract(kind, value, 1.7e12)
            offset = offsets[kind]
            offsets[kind] += 1
            store.add(topics[kind], 0, offset, 1.7e12, got.lines, got.skipped)
            lines += len(got.lines)
        store.flush_all()
    return lines


def run_baseline(objects: list[dict[str, Any]], root: Path, level: int) -> int:
    with gzip.open(root / "baseline.ndjson.gz", "wt", encoding="utf-8", compresslevel=level) as out:
        for obj in objects:
            out.write(json.dumps(obj, separators=(",", ":")) + "\n")
    return len(objects)


def timed(work: Callable[[Path], int]) -> tuple[int, float, int]:
    with tempfile.TemporaryDirectory(prefix="archive-bench-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        lines = work(root)
        elapsed = time.perf_counter() - start
        size = sum(p.stat().st_size for p in root.rglob("*.gz"))
    return lines, elapsed, size


def timed_s3(
    records: list[tuple[Kind, bytes]], level: int, proxy: Any, run_no: int
) -> tuple[int, float, int]:
    from sinks.archive.reader import open_reader

    url = f"s3://bench/run-{run_no}"
    start = time.perf_counter()
    lines = run_archiver(records, url, level)
    elapsed = time.perf_counter() - start
    return lines, elapsed, sum(entry.size for entry in open_reader(url).chunks())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--envelope", type=int, default=50, help="events per envelope record")
    parser.add_argument(
        "--level", type=int, default=6, help="gzip level for both (the archiver's default: 6)"
    )
    parser.add_argument("--no-s3", action="store_true", help="skip the S3 (S3Proxy) workload")
    parser.add_argument(
        "--s3-rounds", type=int, default=3, help="S3 and local runs, interleaved; best of each is compared"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    records, objects = prepare(args.lines, args.envelope)
    results: dict[str, dict[str, float]] = {}

    def add(name: str, lines: int, elapsed: float, size: int) -> None:
        results[name] = {
            "lines": lines,
            "seconds": round(elapsed, 3),
            "linesPerSecond": round(lines / elapsed),
            "bytes": size,
        }

    add("archiver", *timed(lambda root: run_archiver(records, root, args.level)))
    with no_fsync():
        add("archiver-no-fsync", *timed(lambda root: run_archiver(records, root, args.level)))
    add("baseline", *timed(lambda root: run_baseline(objects, root, args.level)))
    s3_ratio: float | None = None
    if not args.no_s3:
        from tests.helpers.s3proxy import S3Proxy

        local_runs = [(results["archiver"]["lines"], results["archiver"]["seconds"])]
        s3_runs: list[tuple[int, float, int]] = []
        with S3Proxy() as proxy:
            proxy.create_bucket("bench")
            os.environ.update(proxy.env())
            timed_s3(records[:2000], args.level, proxy, 0)  # connections, the server's JIT
            # Interleaved, best of each: the machine's load moves during a run, and both sides
            # should see the same moments of it.
            for round_no in range(args.s3_rounds):
                s3_runs.append(timed_s3(records, args.level, proxy, round_no + 1))
                lines, seconds, _ = timed(lambda root: run_archiver(records, root, args.level))
                local_runs.append((lines, seconds))
        add("archiver-s3", *min(s3_runs, key=lambda run: run[1]))
        local_rate = max(lines / seconds for lines, seconds in local_runs)
        s3_ratio = round(results["archiver-s3"]["linesPerSecond"] / local_rate, 3)
        assert results["archiver-s3"]["lines"] == len(objects)
    assert results["archiver"]["lines"] == results["baseline"]["lines"] == len(objects)
    ratio = results["archiver"]["linesPerSecond"] / results["baseline"]["linesPerSecond"]
    summary = {
        "kafkaRecords": len(records),
        "gzipLevel": args.level,
        "envelope": args.envelope,
        "results": results,
        "archiverVsBaseline": round(ratio, 3),
        "s3VsLocal": s3_ratio,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    table = Table(title=f"archive write path: {len(objects):,} lines from {len(records):,} Kafka records")
    for column in ("workload", "lines/s", "seconds", "gzip bytes"):
        table.add_column(column, justify="right" if column != "workload" else "left")
    for name, row in results.items():
        table.add_row(name, f"{row['linesPerSecond']:,.0f}", f"{row['seconds']:.2f}", f"{row['bytes']:,.0f}")
    console = Console()
    console.print(table)
    console.print(f"archiver / baseline: {ratio:.2f}x")
    if s3_ratio is not None:
        console.print(
            f"archiver-s3 / archiver, best of {args.s3_rounds} interleaved runs each (local: "
            f"{args.s3_rounds + 1}): {s3_ratio:.2f}x (target >= 0.7x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
