"""``contest-telemetry bench stream`` / ``benchmarks/stream_throughput.py``: worker throughput.

Measured in one run, against one broker (the configured one, else an embedded Tansu broker):

- ``events_per_s``: the worker (``python -m streams worker``, a subprocess) over N contest events
  published as envelopes per hub (as :class:`producers.publisher.ContestPublisher` sends them),
  from its first applied event to the N-th (timed inside the worker);
- ``ceiling_events_per_s``: a plain aiokafka consumer, ``getmany`` + ``decode_record`` of the same
  records (decoding and validation included, no state);
- ``baseline_events_per_s``: the idiomatic faust loop: one event per record, ``async for value in
  stream`` + ``json.loads`` + one update of a tumbling windowed table per event (at most
  ``--baseline-events`` events: it is slow);
- ``worker_peak_rss_mb``: the worker's peak RSS;
- ``freshness_p99_ms``: a live phase (1 s windows, 0.2 s grace, events stamped with the wall
  clock, envelopes as a hub publisher with a 20 ms linger sends them): time from a window's close
  point (its end plus the grace, when its last event was published) until its result is read
  from ``contest.windows``. It starts once the worker has committed everything the warm-up
  published (``freshness_warmup_catchup_s``: how long that took), so it measures a worker keeping
  up, not one still working off the backlog of its own start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from contest_telemetry.schema import decode_record, encode_envelope
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics

__all__ = ["add_parser", "main", "run", "run_bench"]

P = "telemetry.contest."
ROOT = Path(__file__).resolve().parents[1]


def _iso(ms: float) -> str:
    from streams.windows import iso_ms

    return iso_ms(ms)


def generate(n: int, hubs: int, *, start_ms: float, span_ms: float, seed: int = 1) -> list[dict[str, Any]]:
    """About ``n`` events (4 per contest), sorted by event time."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    contests = max(1, n // 4)
    for c in range(contests):
        hub = f"hub-{c % hubs}"
        cid, key, room = f"c{c}", f"k{c}", f"room-{c % 13}"
        created = start_ms + rng.uniform(0, span_ms)
        started = created + rng.lognormvariate(math.log(2000), 0.8)
        resolved = started + rng.lognormvariate(math.log(300), 0.7)
        n_part = rng.choice([1, 2, 2, 3])
        base = {"level": "info", "hubId": hub, "roomId": room, "contestKey": key}
        out.append(
            {
                **base,
                "message": P + "armed",
                "timestamp": _iso(created),
                "createdAt": created,
                "participantCount": 1,
                "participantCapacity": 2,
            }
        )
        out.append(
            {
                **base,
                "message": P + "launched",
                "timestamp": _iso(started),
                "contestId": cid,
                "startedAt": started,
                "participantCount": n_part,
                "participantCapacity": 2,
            }
        )
        out.append(
            {
                **base,
                "message": P + "workflowStarted",
                "timestamp": _iso(started + 1),
                "contestId": cid,
                "workflowId": f"wf-{cid}",
            }
        )
        out.append(
            {
                **base,
                "message": P + "resolved",
                "timestamp": _iso(resolved),
                "contestId": cid,
                "resolvedAt": resolved,
                "participantCount": n_part,
                "outcomeTier": "decisive",
            }
        )
    out.sort(key=lambda e: e["timestamp"])
    return out


def as_envelopes(
    events: list[dict[str, Any]], flush_every: int, max_events: int = 500
) -> list[tuple[bytes, bytes]]:
    """What the publisher sends: every ``flush_every`` events (its linger), one envelope per hub."""
    out: list[tuple[bytes, bytes]] = []
    pending: dict[str, list[dict[str, Any]]] = defaultdict(list)

    def flush() -> None:
        for hub, evs in pending.items():
            for i in range(0, len(evs), max_events):
                out.append((hub.encode(), encode_envelope(hub, evs[i : i + max_events])))
        pending.clear()

    for i, ev in enumerate(events, 1):
        pending[ev["hubId"]].append(ev)
        if i % flush_every == 0:
            flush()
    flush()
    return out


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=5, max_batch_size=1 << 20, max_request_size=8 << 20
    )
    await producer.start()
    t0 = time.perf_counter()
    try:
        futures = [await producer.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - t0


async def _ceiling(bootstrap: str, topic: str, expect_events: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    events = 0
    t0: float | None = None
    try:
        while events < expect_events:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for records in batch.values():
                for r in records:
                    events += len(decode_record(r.value).events)
        return events / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await consumer.stop()


BASELINE_APP = """
import json, os, sys, time, resource
import faust
from datetime import timedelta
bootstrap, topic, expect, report, app_id, datadir = sys.argv[1:7]
expect = int(expect)
app = faust.App(app_id, broker="kafka://" + bootstrap, store="memory://", datadir=datadir, topic_partitions=2,
                web_enabled=False, consumer_auto_offset_reset="earliest", producer_acks=1, table_standby_replicas=0)
src = app.topic(topic, value_type=bytes, value_serializer="raw", partitions=2)
counts = app.Table("counts", default=int, partitions=2).tumbling(timedelta(seconds=60), expires=timedelta(minutes=10))
state = {"n": 0, "t0": None}
@app.agent(src)
async def agent(stream):
    async for value in stream:
        ev = json.loads(value)
        if state["t0"] is None:
            state["t0"] = time.perf_counter()
        counts[ev["hubId"]] += 1
        state["n"] += 1
        if state["n"] == expect:
            with open(report, "w") as f:
                json.dump({"events": expect, "seconds": time.perf_counter() - state["t0"]}, f)
faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()
"""


def _wait_report(path: Path, proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            time.sleep(0.05)
            return dict(orjson.loads(path.read_bytes()))
        if proc.poll() is not None:
            raise RuntimeError(f"benchmark subprocess exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"no report in {path} within {timeout}s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _worker_env(bootstrap: str, topics: TopicSettings, tmp: Path, tag: str, **worker: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        **topics.as_env(),
        "CT_WORKER_APP_ID": f"bench-{tag}",
        "CT_WORKER_DATA_DIR": str(tmp / f"data-{tag}"),
        # The worker serves an exporter: a free port, so a benchmark never clashes with another worker.
        "CT_EXPORTER_PORT": "0",
    }
    env.update({f"CT_WORKER_{k.upper()}": str(v) for k, v in worker.items()})
    return env


def _topics(tag: str, partitions: int) -> TopicSettings:
    return TopicSettings(
        events=f"bench.events.{tag}",
        dlq=f"bench.dlq.{tag}",
        records=f"bench.records.{tag}",
        windows=f"bench.windows.{tag}",
        partitions=partitions,
    )


async def _freshness(
    bootstrap: str, tmp: Path, partitions: int, hubs: int, seconds: float, rate: int
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    topics = _topics(f"fresh-{tag}", partitions)
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), pipeline_topics(topics))
    grace_ms = 200
    env = _worker_env(bootstrap, topics, tmp, f"fresh-{tag}", window_s=1, grace_s=grace_ms / 1000)
    log = open(tmp / "fresh-worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "worker", "-l", "warn"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # A short fetch wait: Tansu holds a fetch for the whole wait (500 ms by default) even when data
    # is there, which would add to every measured delay.
    consumer = AIOKafkaConsumer(
        topics.windows,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=2)
    await consumer.start()
    await producer.start()
    lags: list[float] = []
    catchup_s = 0.0
    try:
        # Warm up: wait for the worker to join (one window result appears).
        stop = asyncio.Event()

        async def publish(duration: float) -> None:
            seq = 0
            interval = 0.02
            per_tick = max(1, int(rate * interval))
            end = time.time() + duration
            while time.time() < end and not stop.is_set():
                now = time.time() * 1000
                by_hub: dict[str, list[dict[str, Any]]] = defaultdict(list)
                for _ in range(per_tick):
                    seq += 1
                    hub = f"hub-{seq % hubs}"
                    by_hub[hub].append(
                        {
                            "message": P + "resolved",
                            "timestamp": _iso(now),
                            "hubId": hub,
                            "roomId": "r",
                            "contestKey": f"k{seq}",
                            "contestId": f"c{seq}",
                            "resolutionDurationMs": 100 + seq % 500,
                            "participantCount": 2,
                        }
                    )
                for hub, evs in by_hub.items():
                    await producer.send(topics.events, encode_envelope(hub, evs), key=hub.encode())
                await asyncio.sleep(interval)

        async def warmup() -> None:
            while True:
                got = await consumer.getmany(timeout_ms=200)
                if any(got.values()):
                    return
                if proc.poll() is not None:
                    raise RuntimeError("freshness worker exited")

        async def caught_up(timeout: float) -> float:
            """Wait until the worker committed every event published so far (seconds waited):
            the measured phase starts from a worker that is not still working off the backlog
            the warm-up built while it was starting and joining the group."""
            t0 = time.monotonic()
            tps = [TopicPartition(topics.events, p) for p in range(partitions)]
            ends = await consumer.end_offsets(tps)
            admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                while time.monotonic() - t0 < timeout:
                    committed = await admin.list_consumer_group_offsets(f"bench-fresh-{tag}", partitions=tps)
                    if all(tp in committed and committed[tp].offset >= ends[tp] for tp in tps):
                        break
                    if proc.poll() is not None:
                        raise RuntimeError("freshness worker exited")
                    await asyncio.sleep(0.5)
            finally:
                await admin.close()
            return time.monotonic() - t0

        pub = asyncio.create_task(publish(120))
        await asyncio.wait_for(warmup(), 90)
        stop.set()
        await pub
        catchup_s = await caught_up(300)
        while any((await consumer.getmany(timeout_ms=300)).values()):
            pass
        stop.clear()
        # Windows that were open when the warm-up stopped close only when new events move the
        # watermark (event time): they say nothing about the worker's delay, so they are left out.
        measured_from_ms = time.time() * 1000
        pub = asyncio.create_task(publish(seconds))
        t_end = time.time() + seconds + 3
        while time.time() < t_end:
            got = await consumer.getmany(timeout_ms=100)
            seen = time.time() * 1000
            for records in got.values():
                for r in records:
                    w = orjson.loads(r.value)
                    if w["hubId"] != "_all" and w["windowStartMs"] >= measured_from_ms:
                        lags.append(seen - (w["windowEndMs"] + grace_ms))
        await pub
    finally:
        await producer.stop()
        await consumer.stop()
        _stop(proc)
        log.close()
    lags.sort()

    def q(p: float) -> float | None:
        return round(lags[min(len(lags) - 1, max(0, math.ceil(p * len(lags)) - 1))], 1) if lags else None

    return {
        "freshness_p50_ms": q(0.5),
        "freshness_p99_ms": q(0.99),
        "freshness_windows": len(lags),
        "freshness_warmup_catchup_s": round(catchup_s, 1),
    }


def run_bench(
    *,
    events: int,
    bootstrap: str | None,
    hubs: int = 50,
    partitions: int = 2,
    flush_every: int = 10_000,
    baseline_events: int = 20_000,
    freshness_s: float = 10.0,
    freshness_rate: int = 5_000,
) -> dict[str, Any]:
    broker = None
    engine = "configured"
    if bootstrap is None:
        from contest_telemetry.broker import TansuBroker

        broker = TansuBroker().start()
        bootstrap, engine = broker.bootstrap, "embedded"
    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-"))
    try:
        tag = uuid.uuid4().hex[:8]
        topics = _topics(tag, partitions)
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        asyncio.run(ensure_topics(kafka, pipeline_topics(topics)))
        data = generate(events, hubs, start_ms=1_762_243_200_000, span_ms=max(600_000, events * 4.0))
        n = len(data)
        records = as_envelopes(data, flush_every)
        produce_s = asyncio.run(_produce(bootstrap, topics.events, records))
        ceiling = asyncio.run(_ceiling(bootstrap, topics.events, n))

        report = tmp / "worker.json"
        env = _worker_env(bootstrap, topics, tmp, tag, bench_expect_events=n, bench_report=report)
        log = open(tmp / "worker.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "warn"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            worker = _wait_report(report, proc, timeout=120 + n / 2000)
        finally:
            _stop(proc)
            log.close()

        m = min(baseline_events, n)
        base_topic = f"bench.baseline.{tag}"
        from contest_telemetry.topics import TopicSpec

        asyncio.run(ensure_topics(kafka, [TopicSpec(base_topic, partitions)]))
        singles = [(e["hubId"].encode(), orjson.dumps(e)) for e in data[:m]]
        asyncio.run(_produce(bootstrap, base_topic, singles))
        base_report = tmp / "baseline.json"
        script = tmp / "baseline_app.py"
        script.write_text(BASELINE_APP)
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                bootstrap,
                base_topic,
                str(m),
                str(base_report),
                f"bench-baseline-{tag}",
                str(tmp / "baseline-data"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            baseline = _wait_report(base_report, proc, timeout=120 + m / 500)
        finally:
            _stop(proc)
        fresh = (
            asyncio.run(_freshness(bootstrap, tmp, partitions, hubs, freshness_s, freshness_rate))
            if freshness_s
            else {}
        )
    finally:
        if broker is not None:
            broker.stop()
    eps = worker["events"] / worker["seconds"]
    base_eps = baseline["events"] / baseline["seconds"]
    return {
        "broker": engine,
        "events": n,
        "records": len(records),
        "hubs": hubs,
        "partitions": partitions,
        "events_per_s": round(eps),
        "ceiling_events_per_s": round(ceiling),
        "baseline_events_per_s": round(base_eps),
        "baseline_events": m,
        "ratio_to_baseline": round(eps / base_eps, 2),
        "ratio_to_ceiling": round(eps / ceiling, 3),
        "worker_peak_rss_mb": round(worker["rss_peak_kb"] / 1024, 1),
        "produce_events_per_s": round(n / produce_s),
        **fresh,
    }


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="stream throughput")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int | float) and not isinstance(v, bool) else str(v))
    Console(stderr=True).print(table)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("bench", help="stream worker throughput benchmark")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--hubs", type=int, default=50)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--baseline-events", type=int, default=20_000)
    p.add_argument("--freshness-s", type=float, default=10.0, help="0 skips the live freshness phase")
    p.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else embedded)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    result = run_bench(
        events=args.events,
        bootstrap=bootstrap,
        hubs=args.hubs,
        partitions=args.partitions,
        baseline_events=args.baseline_events,
        freshness_s=args.freshness_s,
    )
    _print_table(result)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stream_throughput", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
