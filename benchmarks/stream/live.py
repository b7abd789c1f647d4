"""The live phase: the maximum sustainable rate (publish-to-window freshness p99 <= 1 s, not growing
within the step) and the freshness at 80% of it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.stream.common import say
from benchmarks.stream.kafka_io import bench_topics, make_producer, read_changelog, records_in, send_batched
from benchmarks.stream.worker import Worker
from contest_telemetry.schema import PREFIX as P
from contest_telemetry.schema import encode_envelope, ms_to_iso
from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics

FRESHNESS_LIMIT_MS = 1000.0


WINDOW_MS = 1000


GRACE_MS = 200


TICK_S = 0.02  # the live publisher's linger: one send round every 20 ms


DRAIN_S = 1.5  # how long after a step its windows' results are waited for


WARMUP_S = 3.0  # live warm-up at the first rate


CATCHUP_S = 30.0  # longest wait for the live worker to catch up between phases


LADDER_STEPS = 8  # the live ladder stops after this many steps' time


GROWTH_LIMIT_MS = 250.0
"""A step is sustainable only if the worker keeps up: the median freshness of the windows in the
step's second half may exceed the first half's by at most this. A backlog that grows all through a
short step can stay under 1 s at its end (p50 915 ms, p99 954 ms at 32k/s in a 4 s step) and
still be a rate the worker cannot hold."""


@dataclass
class Windows:
    """Window results read from ``contest.windows``: (hub, window start) -> ms it was first read."""

    consumer: AIOKafkaConsumer
    seen: dict[tuple[str, int], float] = field(default_factory=dict)

    async def run(self) -> None:
        while True:
            got = await self.consumer.getmany(timeout_ms=100)
            now = time.time() * 1000
            for records in got.values():
                for r in records:
                    w = orjson.loads(r.value)
                    if w["hubId"] != "_all":
                        self.seen.setdefault((w["hubId"], int(w["windowStartMs"])), now)


class Publisher:
    """Live events stamped with the wall clock: one record per event (single) or, every 20 ms, one
    envelope per hub (envelope)."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, form: str, hubs: int, partitions: int) -> None:
        self.producer = producer
        self.topic = topic
        self.form = form
        self.hubs = [f"hub-{h}" for h in range(hubs)]
        self.keys = [h.encode() for h in self.hubs]
        self.partitions = partitions
        self.seq = 0

    def _events(self, n: int) -> list[dict[str, Any]]:
        stamp = ms_to_iso(time.time() * 1000)
        out = []
        hubs = self.hubs
        for _ in range(n):
            self.seq += 1
            seq = self.seq
            out.append(
                {
                    "message": P + "resolved",
                    "timestamp": stamp,
                    "hubId": hubs[seq % len(hubs)],
                    "roomId": "r",
                    "contestKey": f"k{seq}",
                    "contestId": f"c{seq}",
                    "resolutionDurationMs": 100 + seq % 500,
                    "participantCount": 2,
                }
            )
        return out

    async def run(self, rate: float, seconds: float, stop: asyncio.Event | None = None) -> tuple[int, float]:
        """Publish at ``rate`` events/s for ``seconds``; (events sent, seconds taken)."""
        producer, topic = self.producer, self.topic
        futures: list[asyncio.Future[Any]] = []
        sent = 0
        t0 = time.monotonic()
        tick = 0
        while True:
            elapsed = time.monotonic() - t0
            if elapsed >= seconds or (stop is not None and stop.is_set()):
                break
            # Catch up with the schedule, at most 200 ms worth at once.
            n = min(int(rate * elapsed) - sent, int(rate * 0.2) + 1)
            if n > 0:
                events = self._events(n)
                sent += n
                if self.form == "single":
                    records = [(ev["hubId"].encode(), orjson.dumps(ev)) for ev in events]
                    futures += await send_batched(producer, topic, records, self.partitions)
                else:
                    by_hub: dict[str, list[dict[str, Any]]] = defaultdict(list)
                    for ev in events:
                        by_hub[ev["hubId"]].append(ev)
                    for hub, evs in by_hub.items():
                        futures.append(
                            await producer.send(topic, encode_envelope(hub, evs), key=hub.encode())
                        )
                if len(futures) > 5000:
                    await asyncio.gather(*futures)
                    futures = []
            tick += 1
            await asyncio.sleep(max(0.0, t0 + tick * TICK_S - time.monotonic()))
        taken = time.monotonic() - t0
        await asyncio.gather(*futures)
        return sent, taken


def quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


async def measure_step(
    publisher: Publisher, windows: Windows, rate: float, seconds: float, hubs: int
) -> dict[str, Any]:
    """One live phase at ``rate``: the freshness of the windows that open and close inside it."""
    t_s = time.time() * 1000
    sent, taken = await publisher.run(rate, seconds)
    t_e = time.time() * 1000
    first = math.ceil(t_s / WINDOW_MS) * WINDOW_MS
    starts = list(range(first, int(t_e - TICK_S * 1000 - GRACE_MS - WINDOW_MS) + 1, WINDOW_MS))
    expected = [(f"hub-{h}", w) for w in starts for h in range(hubs)]
    deadline = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline and any(k not in windows.seen for k in expected):
        await asyncio.sleep(0.05)
    lags = sorted(
        windows.seen[(hub, w)] - (w + WINDOW_MS + GRACE_MS) if (hub, w) in windows.seen else math.inf
        for hub, w in expected
    )
    missing = sum(1 for v in lags if v == math.inf)
    achieved = sent / taken if taken else 0.0
    p50 = quantile(lags, 0.5) if lags else math.inf
    p99 = quantile(lags, 0.99) if lags else math.inf
    publisher_ok = achieved >= 0.95 * rate
    growth = freshness_growth(windows.seen, expected)
    kept_up = growth is not None and growth <= GROWTH_LIMIT_MS
    return {
        "rate": round(rate),
        "achieved_events_per_s": round(achieved),
        "windows": len(expected),
        "missing_windows": missing,
        "p50_ms": round(p50, 1) if p50 != math.inf else None,
        "p99_ms": round(p99, 1) if p99 != math.inf else None,
        "growth_ms": round(growth, 1) if growth is not None else None,
        "publisher_ok": publisher_ok,
        "ok": publisher_ok and p99 <= FRESHNESS_LIMIT_MS and kept_up,
    }


def freshness_growth(seen: dict[tuple[str, int], float], expected: list[tuple[str, int]]) -> float | None:
    """How much the median freshness of the step's later windows exceeds its earlier ones' (ms):
    near 0 when the worker keeps up, the backlog's growth when it does not. None without
    windows in both halves, or with a window that never got a result."""
    starts = sorted({w for _, w in expected})
    if len(starts) < 2:
        return None
    cut = starts[len(starts) // 2]
    halves: tuple[list[float], list[float]] = ([], [])
    for hub, w in expected:
        t = seen.get((hub, w))
        if t is None:
            return None
        halves[w >= cut].append(t - (w + WINDOW_MS + GRACE_MS))
    early, late = (sorted(h) for h in halves)
    return quantile(late, 0.5) - quantile(early, 0.5)


def step_line(form: str, step: dict[str, Any]) -> str:
    p99 = step["p99_ms"]
    p99_text = f"{p99:,.0f} ms" if p99 is not None else f"> {DRAIN_S * 1000:,.0f} ms"
    growth = step.get("growth_ms")
    growth_text = f", growing {growth:+,.0f} ms" if growth is not None else ""
    return (
        f"{form}: {step['rate']:,} events/s (sent {step['achieved_events_per_s']:,}/s): freshness p50 "
        f"{step['p50_ms'] if step['p50_ms'] is not None else '-'} ms, p99 {p99_text}{growth_text} over "
        f"{step['windows']} windows ({step['missing_windows']} without a result) -> "
        f"{'ok' if step['ok'] else 'FAIL'}"
    )


async def run_live(
    bootstrap: str,
    tmp: Path,
    form: str,
    partitions: int,
    hubs: int,
    step_s: float,
    start_rate: int,
    max_rate: int,
) -> dict[str, Any]:
    tag = f"live-{form}-{uuid.uuid4().hex[:8]}"
    topics = bench_topics(tag, partitions)
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), pipeline_topics(topics))
    say(f"{form}: live phase: starting a worker (1 s windows, 0.2 s grace)")
    worker = Worker(bootstrap, topics, tmp, tag, window_s=WINDOW_MS / 1000, grace_s=GRACE_MS / 1000)
    # A short fetch wait: Tansu holds a fetch for the whole wait (500 ms by default) even when data
    # is there, which would add to every measured delay.
    consumer = AIOKafkaConsumer(
        topics.windows,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    producer = make_producer(bootstrap, linger_ms=2)
    await consumer.start()
    await producer.start()
    windows = Windows(consumer)
    reader = asyncio.create_task(windows.run())
    publisher = Publisher(producer, topics.events, form, hubs, partitions)
    steps: list[dict[str, Any]] = []
    at_80: dict[str, Any] | None = None
    catchup = [0.0, 0.0]
    stop_reason = f"every step passed (--max-rate {max_rate:,})"
    max_ok: int | None = None
    try:
        await producer.partitions_for(topics.events)
        await worker.ready()
        # Warm-up: WARMUP_S at the first rate, then (at most 60 s each) its first window result
        # and the worker committing all of it.
        await publisher.run(start_rate, WARMUP_S)
        deadline = time.monotonic() + 60
        while not windows.seen and time.monotonic() < deadline:
            worker.check()
            await asyncio.sleep(0.1)
        if not windows.seen:
            raise TimeoutError("no window result within 60 s of the live warm-up")
        catchup[0], done = await worker.caught_up(60)
        if not done:
            say(f"{form}: the worker did not catch up with the warm-up within 60 s")
        # The ladder's time: LADDER_STEPS steps' worth; the 80% phase comes on top.
        ladder_end = time.monotonic() + LADDER_STEPS * (step_s + DRAIN_S + 1)
        rate = float(start_rate)
        while rate <= max_rate:
            step = await measure_step(publisher, windows, rate, step_s, hubs)
            steps.append(step)
            say(step_line(form, step))
            if not step["ok"]:
                stop_reason = (
                    "publisher below the rate"
                    if not step["publisher_ok"]
                    else "freshness p99 > 1 s"
                    if step["p99_ms"] is None or step["p99_ms"] > FRESHNESS_LIMIT_MS
                    else f"freshness growing by more than {GROWTH_LIMIT_MS:.0f} ms within the step"
                )
                break
            rate *= 2
            if time.monotonic() > ladder_end:
                stop_reason = "out of time for more steps"
                break
        if steps and not steps[0]["ok"] and steps[0]["publisher_ok"]:
            # The first step already failed: step down (halving, twice at most) to find a rate that
            # holds, each from a worker that caught up again.
            stop_reason = f"freshness p99 > 1 s from {start_rate:,}/s (stepped down)"
            while not steps[-1]["ok"] and rate > start_rate / 4:
                rate /= 2
                catchup[1], done = await worker.caught_up(CATCHUP_S)
                if not done or time.monotonic() > ladder_end:
                    stop_reason = (
                        f"freshness p99 > 1 s at {steps[-1]['rate']:,}/s and the worker did not "
                        f"catch up within {CATCHUP_S:.0f}s"
                        if not done
                        else "out of time for more steps"
                    )
                    break
                step = await measure_step(publisher, windows, rate, step_s, hubs)
                steps.append(step)
                say(step_line(form, step) + " (stepping down)")
        if len(steps) >= 2 and steps[-2]["ok"] and not steps[-1]["ok"] and steps[-1]["publisher_ok"]:
            # Doubling is coarse: try halfway between the last rate that held and the first that
            # did not, from a worker that caught up again.
            catchup[1], done = await worker.caught_up(CATCHUP_S)
            if done and time.monotonic() <= ladder_end:
                step = await measure_step(publisher, windows, 0.75 * steps[-1]["rate"], step_s, hubs)
                steps.append(step)
                say(step_line(form, step) + " (between the last two)")
        passed = [s["rate"] for s in steps if s["ok"]]
        max_ok = max(passed) if passed else None
        if max_ok is not None:
            catchup[1], done = await worker.caught_up(CATCHUP_S)
            if not done:
                say(f"{form}: the worker did not catch up within {CATCHUP_S:.0f}s; measuring 80% anyway")
            at_80 = await measure_step(publisher, windows, 0.8 * max_ok, step_s, hubs)
            say(step_line(form, at_80) + " (80% of the maximum)")
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await producer.stop()
        await consumer.stop()
        worker.stop()
    # How the live traffic reached the worker: events per ingested record, state bytes per event.
    live_events = publisher.seq
    ingested = await records_in(bootstrap, topics.ingested, partitions)
    changelog = await read_changelog(bootstrap, worker.app_id)
    live_bytes = changelog["changelog_bytes"]
    return {
        "live_events": live_events,
        "live_ingested_records": ingested,
        "live_events_per_ingested_record": round(live_events / ingested, 2) if ingested else None,
        "live_changelog_bytes_per_event": round(live_bytes / live_events, 1)
        if live_bytes is not None and live_events
        else None,
        "max_sustainable_events_per_s": max_ok,
        "max_sustainable_stop": stop_reason if steps else None,
        "freshness_p99_at_80pct_ms": at_80["p99_ms"] if at_80 else None,
        "freshness_p50_at_80pct_ms": at_80["p50_ms"] if at_80 else None,
        "rate_at_80pct": at_80["rate"] if at_80 else None,
        "freshness_steps": steps,
        "freshness_at_80pct": at_80,
        "freshness_warmup_catchup_s": round(catchup[0], 1),
        "freshness_ladder_catchup_s": round(catchup[1], 1),
    }


LIVE_KEYS = (
    "live_events",
    "live_ingested_records",
    "live_events_per_ingested_record",
    "live_changelog_bytes_per_event",
    "max_sustainable_events_per_s",
    "max_sustainable_stop",
    "freshness_p99_at_80pct_ms",
    "freshness_p50_at_80pct_ms",
    "rate_at_80pct",
    "freshness_steps",
    "freshness_at_80pct",
    "freshness_warmup_catchup_s",
    "freshness_ladder_catchup_s",
)
