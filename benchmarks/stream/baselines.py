"""What the worker is compared with: the aiokafka ceiling and the idiomatic faust program
(:mod:`benchmarks.stream.faust_app`)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from benchmarks.stream.common import ROOT, say, stop_process
from benchmarks.stream.kafka_io import produce
from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import TopicSpec, ensure_topics

CEILING_READS = 3
"""The ceiling is the fastest of this many reads of the same records."""


async def read_ceiling(bootstrap: str, topic: str, expect_events: int) -> float:
    """Events/s of ``getmany`` + :func:`streams.fastdecode.decode_events` over ``topic``."""
    from streams.fastdecode import decode_events

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
    deadline = time.monotonic() + 120 + expect_events / 5000
    try:
        while events < expect_events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ceiling consumer read {events} of {expect_events} events")
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            for records in batch.values():
                for r in records:
                    events += len(decode_events(r.value).events)
        return events / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await consumer.stop()


async def await_report(
    path: Path, proc: subprocess.Popen[bytes], timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            await asyncio.sleep(0.05)
            return dict(orjson.loads(path.read_bytes()))
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what}: no report in {path} within {timeout:.0f}s")


class Baseline:
    """The idiomatic faust program (:mod:`benchmarks.stream.faust_app`) over single-event records published
    before it starts; it times itself from its first event to the last. Started early, so its
    faust start-up (group join) overlaps the first worker's: :meth:`result` is awaited before that
    worker is measured, so the two never process at the same time."""

    def __init__(
        self, bootstrap: str, tmp: Path, singles: list[tuple[bytes, bytes]], partitions: int
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.events = len(singles)
        self.topic = f"bench.baseline.{tag}"
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        asyncio.run(ensure_topics(kafka, [TopicSpec(self.topic, partitions)]))
        asyncio.run(produce(bootstrap, self.topic, singles, partitions))
        self.report = tmp / "baseline.json"
        from contest_telemetry.broker.process import die_with_parent

        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.stream.faust_app",
                bootstrap,
                self.topic,
                str(self.events),
                str(self.report),
                f"bench-baseline-{tag}",
                str(tmp / "baseline-data"),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),  # prctl only, resolved before the fork
        )
        self.events_per_s: float | None = None
        self.error: str | None = None
        self.done = False

    async def result(self) -> float | None:
        """Its events/s (None, with ``error`` set, when it failed)."""
        if not self.done:
            self.done = True
            try:
                got = await await_report(self.report, self.proc, 180 + self.events / 500, "faust baseline")
            except (RuntimeError, TimeoutError) as exc:
                self.error = str(exc)
                say(f"faust baseline failed: {exc}")
            else:
                self.events_per_s = float(got["events"] / got["seconds"])
                say(f"faust baseline: {self.events_per_s:,.0f} events/s over {self.events:,} events")
            finally:
                stop_process(self.proc)
        return self.events_per_s

    def stop(self) -> None:
        stop_process(self.proc)
