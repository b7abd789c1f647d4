"""Publisher benchmark: caller-side cost per ``record_*`` call and throughput, against the raw
aiokafka producer sending the same bytes, in one run (medians of --repeats runs).

    python benchmarks/publish.py [--events 100000] [--engine embedded|kafka] [--json]

Uses KAFKA_BOOTSTRAP_SERVERS when set, else starts the chosen local broker (embedded default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections import defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from contest_telemetry.broker import make_broker
from contest_telemetry.schema import encode_envelope
from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import TopicSpec, ensure_topics
from producers import ContestPublisher, PublisherSettings
from producers.loadgen import LoadGenerator, LoadProfile


def _steps(n: int) -> list[Any]:
    gen = LoadGenerator(LoadProfile(hubs=100, rate=10_000.0, seed=1), start_ms=1_762_243_500_000.0)
    steps: list[Any] = []
    horizon = gen.start_ms
    while len(steps) < n:
        horizon += 1000.0
        steps.extend(gen.steps_until(horizon))
    return steps[:n]


async def _publisher_run(
    kafka: KafkaSettings, topic: str, steps: list[Any], batching: str
) -> dict[str, float]:
    settings = PublisherSettings(batching=batching, buffer_size=len(steps) + 1, linger_ms=5)  # type: ignore[arg-type]
    costs: list[int] = []
    async with ContestPublisher(kafka, settings, topic=topic) as pub:
        began = time.perf_counter()
        for i, step in enumerate(steps):
            method = getattr(pub, step.method)
            t0 = time.perf_counter_ns()
            await method(**step.kwargs)
            costs.append(time.perf_counter_ns() - t0)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # a real hub's loop yields; let the sender run
        await pub.flush()
        elapsed = time.perf_counter() - began
    assert pub.stats()["sent"] == len(steps), pub.stats()
    costs.sort()
    return {
        "events_per_s": len(steps) / elapsed,
        "call_median_us": costs[len(costs) // 2] / 1000,
        "call_p99_us": costs[int(len(costs) * 0.99)] / 1000,
    }


async def _payloads(steps: list[Any]) -> list[dict[str, Any]]:
    """The events the publisher would send (decoded from its buffer), captured without a broker."""
    pub = ContestPublisher(KafkaSettings(), PublisherSettings(buffer_size=len(steps) + 1))
    pub._open = True  # capture mode: fill the buffer, never send

    for step in steps:
        await getattr(pub, step.method)(**step.kwargs)
    return list(pub._buffer)


async def _raw_run(
    kafka: KafkaSettings, topic: str, records: list[tuple[bytes, bytes]], events: int
) -> float:
    producer = AIOKafkaProducer(
        **kafka.aiokafka_kwargs(),
        acks="all",
        linger_ms=5,  # type: ignore[arg-type]
        max_batch_size=1024 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        began = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await producer.flush()
        await asyncio.gather(*futures)
        return events / (time.perf_counter() - began)
    finally:
        await producer.stop()


def _envelopes(payloads: list[dict[str, Any]], size: int = 500) -> list[tuple[bytes, bytes]]:
    # Same grouping as the publisher does per flush: by hub, in chunks.
    out: list[tuple[bytes, bytes]] = []
    for start in range(0, len(payloads), 5000):
        by_hub: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in payloads[start : start + 5000]:
            by_hub[event["hubId"]].append(event)
        for hub, events in by_hub.items():
            for i in range(0, len(events), size):
                out.append((hub.encode(), encode_envelope(hub, events[i : i + size])))
    return out


async def _bench(kafka: KafkaSettings, events: int, repeats: int) -> dict[str, Any]:
    steps = _steps(events)
    payloads = await _payloads(steps)
    singles = [(p["hubId"].encode(), orjson.dumps(p)) for p in payloads]
    envelopes = _envelopes(payloads)
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for _ in range(repeats):
        topic = f"bench.publish.{uuid.uuid4().hex[:8]}"
        await ensure_topics(kafka, [TopicSpec(topic, 4)])
        results["publisher_single"].append(await _publisher_run(kafka, topic, steps, "single"))
        results["raw_single"].append({"events_per_s": await _raw_run(kafka, topic, singles, events)})
        results["publisher_envelope"].append(await _publisher_run(kafka, topic, steps, "envelope"))
        results["raw_envelope"].append({"events_per_s": await _raw_run(kafka, topic, envelopes, events)})
    med = {
        name: {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
        for name, runs in results.items()
    }
    return {
        "events": events,
        "repeats": repeats,
        "runs": med,
        "ratio_single_vs_raw": round(
            med["publisher_single"]["events_per_s"] / med["raw_single"]["events_per_s"], 3
        ),
        "ratio_envelope_vs_raw_envelope": round(
            med["publisher_envelope"]["events_per_s"] / med["raw_envelope"]["events_per_s"], 3
        ),
        "ratio_envelope_vs_raw_single": round(
            med["publisher_envelope"]["events_per_s"] / med["raw_single"]["events_per_s"], 3
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engine", choices=("embedded", "kafka"), default="embedded")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    broker = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        broker = make_broker(args.engine).start()
        bootstrap = broker.bootstrap
    try:
        report = asyncio.run(_bench(KafkaSettings(bootstrap_servers=bootstrap), args.events, args.repeats))
    finally:
        if broker is not None:
            broker.stop()
    report["broker"] = args.engine if broker else "external"
    table = Table(
        title=f"publisher vs raw aiokafka ({report['broker']}, {args.events:,} events, median of {args.repeats})"
    )
    for col in ("run", "events/s", "call median us", "call p99 us"):
        table.add_column(col, justify="right")
    for name, r in report["runs"].items():
        table.add_row(
            name,
            f"{r['events_per_s']:,.0f}",
            str(r.get("call_median_us", "-")),
            str(r.get("call_p99_us", "-")),
        )
    console = Console(stderr=args.json)
    console.print(table)
    console.print(
        f"publisher/raw, same single-event bytes: {report['ratio_single_vs_raw']}x; "
        f"envelopes vs raw envelopes: {report['ratio_envelope_vs_raw_envelope']}x; "
        f"envelopes vs raw single events: {report['ratio_envelope_vs_raw_single']}x"
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
