"""The worker under test: ``python -m streams worker`` with its ingest child, as deployed, timed
through its ``CT_WORKER_BENCH_EXPECT_EVENTS`` / ``CT_WORKER_BENCH_REPORT`` hook."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.stream.common import ROOT, http_get, stop_process
from benchmarks.stream.kafka_io import committed_offsets, make_producer
from contest_telemetry.settings import TopicSettings

WARMUP_VALUE = b"bench warm-up: not a contest event"


def worker_env(bootstrap: str, topics: TopicSettings, tmp: Path, tag: str, **worker: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        **topics.as_env(),
        "CT_WORKER_APP_ID": f"bench-{tag}",
        "CT_WORKER_DATA_DIR": str(tmp / f"data-{tag}"),
        # The deployed default: the worker starts the ingest stage as its child and reads its output.
        "CT_WORKER_SOURCE": "ingested",
        "CT_WORKER_INGEST": "child",
        "CT_INGEST_GROUP_ID": f"bench-ingest-{tag}",
        # The worker serves an exporter: a free port, so a benchmark never clashes with another worker.
        "CT_EXPORTER_PORT": "0",
    }
    env.update({f"CT_WORKER_{k.upper()}": str(v) for k, v in worker.items()})
    return env


class Worker:
    """``python -m streams worker`` with its ingest child, on its own topics, group and app id."""

    def __init__(self, bootstrap: str, topics: TopicSettings, tmp: Path, tag: str, **settings: Any) -> None:
        from contest_telemetry.broker.process import die_with_parent

        self.bootstrap = bootstrap
        self.topics = topics
        self.app_id = f"bench-{tag}"
        self.ingest_group = f"bench-ingest-{tag}"
        self.log_path = tmp / f"worker-{tag}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streams",
                "worker",
                "-l",
                os.environ.get("CT_BENCH_WORKER_LOGLEVEL", "warn"),
            ],
            cwd=ROOT,
            env=worker_env(bootstrap, topics, tmp, tag, **settings),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # prctl only, resolved before the fork
        )

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"worker exited with {self.proc.returncode}; log {self.log_path}:\n{tail}")

    def ingest_pid(self) -> int | None:
        """The ingest child (``python -m streams ingest``) of the worker, from /proc."""
        pids: list[int] = []
        try:
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            return None
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streams" in cmd and b"ingest" in cmd:
                return pid
        return None

    def metrics_url(self) -> str | None:
        found = re.search(rb"metrics at (http://\S+)", self.log_path.read_bytes())
        return found.group(1).decode() if found else None

    async def ready(self, timeout: float = 180.0) -> float:
        """Wait until the ingest child consumes (its group committed past one record per partition
        that is not an event: dead-lettered) and the worker fetches every partition of the ingested
        topic (its exporter reports their lag); seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        n = self.topics.partitions
        producer = make_producer(self.bootstrap)
        await producer.start()
        try:
            await asyncio.gather(
                *[
                    await producer.send(self.topics.events, WARMUP_VALUE, key=b"bench-warm-up", partition=p)
                    for p in range(n)
                ]
            )
        finally:
            await producer.stop()
        tps = [TopicPartition(self.topics.events, p) for p in range(n)]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            while True:
                self.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the ingest child did not consume within {timeout:.0f}s")
                committed = await committed_offsets(admin, self.ingest_group, tps)
                if all(tp in committed and committed[tp] >= 1 for tp in tps):
                    break
                await asyncio.sleep(0.2)
        finally:
            await admin.close()
        pattern = re.compile(r'^contest_consumer_lag_records\{[^}]*partition="(\d+)"[^}]*\}', re.M)
        while True:
            self.check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not fetch within {timeout:.0f}s (log {self.log_path})")
            url = self.metrics_url()
            if url is not None:
                try:
                    text = await asyncio.to_thread(http_get, url)
                except OSError:
                    text = ""
                seen = {
                    int(m.group(1))
                    for m in pattern.finditer(text)
                    if f'topic="{self.topics.ingested}"' in m.group(0)
                }
                if seen >= set(range(n)):
                    return time.monotonic() - t0
            await asyncio.sleep(0.2)

    async def caught_up(self, timeout: float) -> tuple[float, bool]:
        """Wait until the ingest group committed everything on ``contest.events`` and the worker
        everything ingested so far (but a transaction marker); (seconds waited, caught up)."""
        t0 = time.monotonic()
        n = self.topics.partitions
        events = [TopicPartition(self.topics.events, p) for p in range(n)]
        ingested = [TopicPartition(self.topics.ingested, p) for p in range(n)]
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await consumer.start()
        await admin.start()
        try:
            while time.monotonic() - t0 < timeout:
                self.check()
                ends = await consumer.end_offsets(events)
                committed = await committed_offsets(admin, self.ingest_group, events)
                if all(tp in committed and committed[tp] >= ends[tp] for tp in events):
                    ends = await consumer.end_offsets(ingested)
                    committed = await committed_offsets(admin, self.app_id, ingested)
                    # A transactional ingest stage ends each partition with a commit marker, which
                    # the worker's committed offset never passes.
                    if all(
                        ends[tp] == 0 or (tp in committed and committed[tp] >= ends[tp] - 1)
                        for tp in ingested
                    ):
                        return time.monotonic() - t0, True
                await asyncio.sleep(0.5)
        finally:
            await admin.close()
            await consumer.stop()
        return time.monotonic() - t0, False

    def stop(self) -> None:
        try:
            stop_process(self.proc)
        finally:
            self._log.close()


STALL_S = 10.0


class LostEventsError(RuntimeError):
    """The worker read everything ingested but applied fewer events than were published."""

    def __init__(self, applied: int, expected: int) -> None:
        super().__init__(
            f"the worker applied {applied:,} of {expected:,} events and stopped: lag 0 on the ingested "
            f"topic, no progress for {STALL_S:.0f}s"
        )
        self.applied = applied
        self.expected = expected


_LAG = re.compile(r"^contest_consumer_lag_records\{[^}]*\} (\S+)$", re.M)


_EVENTS = re.compile(r"^contest_events_total\{[^}]*\} (\S+)$", re.M)


async def scrape(worker: Worker) -> tuple[int, list[float]] | None:
    """(events applied, lag per input partition) from the worker's exporter."""
    url = worker.metrics_url()
    if url is None:
        return None
    try:
        text = await asyncio.to_thread(http_get, url)
    except OSError:
        return None
    return round(sum(float(v) for v in _EVENTS.findall(text))), [float(v) for v in _LAG.findall(text)]


async def await_applied(worker: Worker, report: Path, n: int, timeout: float) -> dict[str, Any]:
    """The worker's report; :class:`LostEventsError` when it read all it was given (lag 0) but its
    applied count stays short of ``n`` for ``STALL_S`` (scraped every 5 s, after the first 10 s)."""
    t0 = time.monotonic()
    last, since, scraped = -1, t0, t0 + 10.0
    while time.monotonic() - t0 < timeout:
        if report.exists() and report.stat().st_size:
            await asyncio.sleep(0.05)
            return dict(orjson.loads(report.read_bytes()))
        worker.check()
        now = time.monotonic()
        if now >= scraped:
            scraped = now + 5.0  # a scrape costs the worker CPU: rarely
            got = await scrape(worker)
            if got is not None:
                applied, lags = got
                if applied != last:
                    last, since = applied, now
                elif now - since >= STALL_S and lags and max(lags) == 0 and applied < n:
                    raise LostEventsError(applied, n)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"worker: no report in {report} within {timeout:.0f}s")
