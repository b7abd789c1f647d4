"""``contest-telemetry bench stream`` / ``benchmarks/stream_throughput.py``: worker throughput.

One run, one broker (the configured one, else an embedded Tansu broker), one set of generated
contest events (event times of the last minutes), measured per *form* (``--form``) in which hubs
publish them to ``contest.events``:

- ``single``: one event per record, keyed by hubId (what log shippers send: the contract form);
- ``envelope``: publisher envelopes, one per hub every ``flush_every`` events (as
  :class:`producers.publisher.ContestPublisher` sends them).

Per form:

- ``events_per_s``: the whole path: the worker command as deployed (``python -m streams worker``,
  ``CT_WORKER_SOURCE=ingested``, ``CT_WORKER_INGEST=child``: it starts the ingest stage as a child
  process). The worker and its ingest child are started on empty topics and waited for (the ingest
  group committed past one warm-up record that is not an event, per partition; the worker's
  exporter reports a lag for every partition of the ingested topic), then the records are
  published: from the first publish to the worker's report that the N-th event was applied
  (``CT_WORKER_BENCH_EXPECT_EVENTS``). ``worker_timed_events_per_s`` is the worker's own span (its
  first applied event to the N-th), ``publish_events_per_s`` how fast the records went out;
- ``ceiling_events_per_s``: a plain aiokafka consumer, ``getmany`` +
  :func:`streams.fastdecode.decode_events` of the same records (validation included, no state);
- ``faust_events_per_s``: the idiomatic faust loop: one event per record, ``async for value in
  stream`` + ``json.loads`` + one update of a tumbling windowed table per event, on the
  single-event records of the same events (at most ``--baseline-events``: it is slow). Run once;
  the envelope form is compared with the same figure (the baseline reads single-event records);
- ``vs_ceiling``, ``vs_faust``: ratios, printed beside their targets;
- ``changelog_bytes_per_event``: key + value bytes of every record the throughput run wrote to the
  worker's changelog topic (``<app_id>-state-changelog``, read from its start to its end offsets;
  a tombstone counts its key) over the events; for the single form also over the mean size (key +
  value) of one event record (``changelog_vs_event_size``);
- ``worker_peak_rss_mb``, ``ingest_peak_rss_mb``: VmHWM of the worker and of its ingest child,
  from /proc when the worker's report arrives (null when it cannot be read). The report's own
  ``rss_peak_kb`` (``ru_maxrss``, kept as ``worker_ru_maxrss_mb``) is not used: Linux carries the
  peak RSS of the forked parent (this benchmark, holding every generated record) across exec;
- ``max_sustainable_events_per_s``: a live worker (1 s windows, 0.2 s grace, events stamped with
  the wall clock when published) gets phases of ``--step-s`` seconds at 1k, 2k, 4k, ... events/s
  (the single form one record per event, the envelope form one envelope per hub every 20 ms); a
  step passes when its publish-to-window freshness p99 is <= 1 s and the publisher reached the
  rate. Freshness of a window: from its close point (its end plus the grace: when its last event
  was published) until its result is read from ``contest.windows``; a step counts the windows
  (every hub) that open and close inside it, and one with no result 1.5 s after the step is later
  than any limit. The ladder stops at the first failing step; the last passing rate is the
  maximum (when the first step fails: halving, twice at most, each after the worker caught up).
  Then, once the worker caught up again, one phase at 80% of it: ``freshness_p99_at_80pct_ms``.
  ``live_events_per_ingested_record`` and ``live_changelog_bytes_per_event`` say how the live
  traffic reached the worker (the throughput run sees large ingested records, live traffic small).

Events lost on the way (the worker read everything ingested but applied fewer events than were
published: ``LostEventsError``) are reported in ``lost_events`` and the measurement is repeated once
on fresh topics. The faust baseline starts with the first worker (their start-ups overlap; the
baseline finishes before that worker is measured). Bounded: the default ``--form both`` run takes
about 4 minutes on Tansu (faust joins a group there in ~30 s, four workers), 2.5 on Apache Kafka.
``CT_BENCH_WORKER_LOGLEVEL=info`` keeps the workers' (and ingest children's) logs in the run's
temporary directory verbose.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from contest_telemetry.schema import PREFIX as P
from contest_telemetry.schema import encode_envelope, ms_to_iso
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import TopicSpec, ensure_topics, pipeline_topics

__all__ = ["FORMS", "TARGETS", "add_arguments", "add_parser", "main", "run", "run_bench"]

ROOT = Path(__file__).resolve().parents[1]
FORMS = ("single", "envelope")
# Printed beside the figures; ``meets`` in the JSON says whether a form met each.
TARGETS: dict[str, dict[str, float]] = {
    "single": {"vs_ceiling": 0.25, "changelog_vs_event_size": 2.0, "freshness_p99_at_80pct_ms": 1000.0},
    "envelope": {"vs_ceiling": 0.5, "vs_faust": 10.0, "freshness_p99_at_80pct_ms": 1000.0},
}
FRESHNESS_LIMIT_MS = 1000.0
WINDOW_MS = 1000
GRACE_MS = 200
TICK_S = 0.02  # the live publisher's linger: one send round every 20 ms
DRAIN_S = 1.5  # how long after a step its windows' results are waited for
WARMUP_S = 3.0  # live warm-up at the first rate
CATCHUP_S = 30.0  # longest wait for the live worker to catch up between phases
LADDER_STEPS = 8  # the live ladder stops after this many steps' time
WARMUP_VALUE = b"bench warm-up: not a contest event"

_T0 = time.monotonic()


def _say(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's (and Kafka's) default partitioner gives a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


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
                "timestamp": ms_to_iso(created),
                "createdAt": created,
                "participantCount": 1,
                "participantCapacity": 2,
            }
        )
        out.append(
            {
                **base,
                "message": P + "launched",
                "timestamp": ms_to_iso(started),
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
                "timestamp": ms_to_iso(started + 1),
                "contestId": cid,
                "workflowId": f"wf-{cid}",
            }
        )
        out.append(
            {
                **base,
                "message": P + "resolved",
                "timestamp": ms_to_iso(resolved),
                "contestId": cid,
                "resolvedAt": resolved,
                "participantCount": n_part,
                "outcomeTier": "decisive",
            }
        )
    out.sort(key=lambda e: e["timestamp"])
    return out


def as_singles(events: list[dict[str, Any]]) -> list[tuple[bytes, bytes]]:
    """What a log shipper sends: one record per event, keyed by hubId."""
    return [(ev["hubId"].encode(), orjson.dumps(ev)) for ev in events]


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


def _producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=linger_ms,
        max_batch_size=1 << 20,
        max_request_size=8 << 20,
    )


async def _send_batched(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[bytes, bytes]], partitions: int
) -> list[asyncio.Future[Any]]:
    """Queue ``records`` as record batches per partition (the default partitioner's choice for each
    key): one Kafka record per element, without ``send``'s per-record overhead in this process."""
    futures: list[asyncio.Future[Any]] = []
    batches: dict[int, Any] = {}
    for key, value in records:
        p = _partition_of(key, partitions)
        batch = batches.get(p)
        if batch is None:
            batch = batches[p] = producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=p))
            batch = batches[p] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a batch")
    for p, batch in batches.items():
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=p))
    return futures


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], partitions: int) -> float:
    """Publish ``records`` (acknowledged); seconds from the first send to the last acknowledgement."""
    producer = _producer(bootstrap)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        t0 = time.perf_counter()
        futures = await _send_batched(producer, topic, records, partitions)
        await asyncio.gather(*futures)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


async def _ceiling(bootstrap: str, topic: str, expect_events: int) -> float:
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


async def _changelog_bytes(bootstrap: str, app_id: str) -> dict[str, Any]:
    """Records and key + value bytes of the worker's changelog, from its start to its end offsets."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = await admin.list_topics()
    finally:
        await admin.close()
    topic = f"{app_id}-state-changelog"
    if topic not in names:
        found = sorted(t for t in names if t.startswith(app_id) and t.endswith("changelog"))
        if not found:
            return {"changelog_topic": None, "changelog_records": None, "changelog_bytes": None}
        topic = found[0]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=64 << 20,
    )
    await consumer.start()
    n = size = 0
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        todo = {tp for tp in tps if ends[tp] > await consumer.position(tp)}
        deadline = time.monotonic() + 120
        while todo and time.monotonic() < deadline:
            got = await consumer.getmany(*todo, timeout_ms=1000, max_records=10_000)
            for tp, records in got.items():
                for r in records:
                    if r.offset < ends[tp]:
                        n += 1
                        size += len(r.key or b"") + len(r.value or b"")
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
    finally:
        await consumer.stop()
    return {"changelog_topic": topic, "changelog_records": n, "changelog_bytes": size}


async def _records_in(bootstrap: str, topic: str, partitions: int) -> int:
    """Records in ``topic`` (the sum of its end offsets: it is never truncated here)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return int(sum(ends.values()))
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


async def _await_report(
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
        # The deployed default: the worker starts the ingest stage as its child and reads its output.
        "CT_WORKER_SOURCE": "ingested",
        "CT_WORKER_INGEST": "child",
        "CT_INGEST_GROUP_ID": f"bench-ingest-{tag}",
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
        ingested=f"bench.ingested.{tag}",
        partitions=partitions,
    )


def _proc_stat(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, user + system; peak RSS in kB) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return cpu, int(hwm.group(1)) if hwm else 0


class _Worker:
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
            env=_worker_env(bootstrap, topics, tmp, tag, **settings),
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
        producer = _producer(self.bootstrap)
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
                committed = await _committed(admin, self.ingest_group, tps)
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
                    text = await asyncio.to_thread(_http_get, url)
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
                committed = await _committed(admin, self.ingest_group, events)
                if all(tp in committed and committed[tp] >= ends[tp] for tp in events):
                    ends = await consumer.end_offsets(ingested)
                    committed = await _committed(admin, self.app_id, ingested)
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
            _stop(self.proc)
        finally:
            self._log.close()


async def _committed(
    admin: AIOKafkaAdminClient, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The group's committed offsets; none while its coordinator is not there yet (a fresh
    Apache Kafka broker creates ``__consumer_offsets`` on the first group)."""
    try:
        got = await admin.list_consumer_group_offsets(group, partitions=tps)
    except KafkaError:
        return {}
    return {tp: meta.offset for tp, meta in got.items()}


def _http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:  # our own exporter, on 127.0.0.1
        return str(resp.read().decode())


# -- throughput -------------------------------------------------------------------------------------


class LostEventsError(RuntimeError):
    """The worker read everything ingested but applied fewer events than were published."""

    def __init__(self, applied: int, expected: int) -> None:
        super().__init__(
            f"the worker applied {applied:,} of {expected:,} events and stopped: lag 0 on the ingested "
            f"topic, no progress for {STALL_S:.0f}s"
        )
        self.applied = applied
        self.expected = expected


STALL_S = 10.0
_LAG = re.compile(r"^contest_consumer_lag_records\{[^}]*\} (\S+)$", re.M)
_EVENTS = re.compile(r"^contest_events_total\{[^}]*\} (\S+)$", re.M)


async def _scrape(worker: _Worker) -> tuple[int, list[float]] | None:
    """(events applied, lag per input partition) from the worker's exporter."""
    url = worker.metrics_url()
    if url is None:
        return None
    try:
        text = await asyncio.to_thread(_http_get, url)
    except OSError:
        return None
    return round(sum(float(v) for v in _EVENTS.findall(text))), [float(v) for v in _LAG.findall(text)]


async def _await_applied(worker: _Worker, report: Path, n: int, timeout: float) -> dict[str, Any]:
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
            got = await _scrape(worker)
            if got is not None:
                applied, lags = got
                if applied != last:
                    last, since = applied, now
                elif now - since >= STALL_S and lags and max(lags) == 0 and applied < n:
                    raise LostEventsError(applied, n)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"worker: no report in {report} within {timeout:.0f}s")


async def _throughput(
    bootstrap: str,
    tmp: Path,
    form: str,
    records: list[tuple[bytes, bytes]],
    n: int,
    partitions: int,
    attempts: int = 2,
    before: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """:func:`_throughput_once`, again on fresh topics (up to ``attempts``) when events were lost;
    ``lost_events`` lists each attempt that lost some."""
    lost: list[dict[str, int]] = []
    error: str | None = None
    for attempt in range(1, attempts + 1):
        try:
            out = await _throughput_once(bootstrap, tmp, form, records, n, partitions, before)
        except LostEventsError as exc:
            _say(f"{form}: attempt {attempt}: {exc}")
            lost.append({"attempt": attempt, "applied": exc.applied, "expected": exc.expected})
            error = str(exc)
            continue
        except (RuntimeError, TimeoutError, KafkaError) as exc:
            _say(f"{form}: throughput run failed: {exc}")
            error = f"{type(exc).__name__}: {exc}"
            break
        out["lost_events"] = lost
        out["error"] = None
        return out
    keys = [
        "events_per_s",
        "seconds",
        "worker_timed_events_per_s",
        "publish_events_per_s",
        "ready_s",
        "ceiling_events_per_s",
        "vs_ceiling",
        "worker_peak_rss_mb",
        "worker_ru_maxrss_mb",
        "ingest_peak_rss_mb",
        "worker_main_thread_cpu_s",
        "worker_process_cpu_s",
        "worker_cpu_s_whole_path",
        "ingest_cpu_s_whole_path",
        "changelog_topic",
        "changelog_records",
        "changelog_bytes",
        "changelog_bytes_per_event",
    ]
    sizes = [len(k) + len(v) for k, v in records]
    return {
        **dict.fromkeys(keys),
        "events": n,
        "records": len(records),
        "mean_record_bytes": round(sum(sizes) / len(sizes), 1),
        "lost_events": lost,
        "error": error,
    }


async def _throughput_once(
    bootstrap: str,
    tmp: Path,
    form: str,
    records: list[tuple[bytes, bytes]],
    n: int,
    partitions: int,
    before: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """One measurement on fresh topics; ``before`` is awaited once the worker is ready, before the
    records are published (the faust baseline finishing its own measurement)."""
    tag = f"{form}-{uuid.uuid4().hex[:8]}"
    topics = _topics(tag, partitions)
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), pipeline_topics(topics))
    report = tmp / f"worker-{tag}.json"
    _say(f"{form}: starting the worker (and its ingest child)")
    worker = _Worker(bootstrap, topics, tmp, tag, bench_expect_events=n, bench_report=report)
    try:
        ready_s = await worker.ready()
        if before is not None:
            await before()
        ingest_pid = worker.ingest_pid()
        ingest_before = _proc_stat(ingest_pid) if ingest_pid else None
        worker_before = _proc_stat(worker.proc.pid)
        _say(f"{form}: ready after {ready_s:.1f}s; publishing {len(records):,} records ({n:,} events)")
        t_pub = time.time()
        publish_s = await _produce(bootstrap, topics.events, records, partitions)
        _say(f"{form}: published in {publish_s:.1f}s; waiting for the worker to apply {n:,} events")
        result = await _await_applied(worker, report, n, 120 + n / 1000)
        t_end = report.stat().st_mtime
        ingest_after = _proc_stat(ingest_pid) if ingest_pid else None
        worker_after = _proc_stat(worker.proc.pid)
    finally:
        worker.stop()
    whole_s = t_end - t_pub
    eps = n / whole_s
    _say(f"{form}: {eps:,.0f} events/s (whole path, {whole_s:.1f}s); reading the ceiling")
    ceiling = await _ceiling(bootstrap, topics.events, n)
    changelog = await _changelog_bytes(bootstrap, worker.app_id)
    sizes = [len(k) + len(v) for k, v in records]
    out: dict[str, Any] = {
        "events": n,
        "records": len(records),
        "mean_record_bytes": round(sum(sizes) / len(sizes), 1),
        "events_per_s": round(eps),
        "seconds": round(whole_s, 2),
        "worker_timed_events_per_s": round(result["events"] / result["seconds"]),
        "publish_events_per_s": round(n / publish_s),
        "ready_s": round(ready_s, 1),
        "ceiling_events_per_s": round(ceiling),
        "vs_ceiling": round(eps / ceiling, 3),
        # VmHWM of the worker (/proc, read when its report arrived): the report's ru_maxrss also
        # counts the pages of this process the worker was forked from (Linux keeps the larger of
        # the two across exec), so it overstates a worker started by a large parent.
        "worker_peak_rss_mb": round(worker_after[1] / 1024, 1) if worker_after else None,
        "worker_ru_maxrss_mb": round(result["rss_peak_kb"] / 1024, 1),
        "ingest_peak_rss_mb": round(ingest_after[1] / 1024, 1) if ingest_after else None,
        # CPU seconds over the worker's own span (its report) and over the whole path (/proc).
        "worker_main_thread_cpu_s": _round(result.get("main_thread_cpu_s"), 2),
        "worker_process_cpu_s": _round(result.get("process_cpu_s"), 2),
        "worker_cpu_s_whole_path": (
            round(worker_after[0] - worker_before[0], 2) if worker_after and worker_before else None
        ),
        "ingest_cpu_s_whole_path": (
            round(ingest_after[0] - ingest_before[0], 2) if ingest_after and ingest_before else None
        ),
        **changelog,
    }
    out["changelog_bytes_per_event"] = (
        round(changelog["changelog_bytes"] / n, 1) if changelog["changelog_bytes"] is not None else None
    )
    return out


def _round(v: Any, digits: int) -> float | None:
    return round(float(v), digits) if isinstance(v, int | float) else None


class _Baseline:
    """The idiomatic faust program (:data:`BASELINE_APP`) over single-event records published
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
        asyncio.run(_produce(bootstrap, self.topic, singles, partitions))
        self.report = tmp / "baseline.json"
        script = tmp / "baseline_app.py"
        script.write_text(BASELINE_APP)
        from contest_telemetry.broker.process import die_with_parent

        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
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
                got = await _await_report(self.report, self.proc, 180 + self.events / 500, "faust baseline")
            except (RuntimeError, TimeoutError) as exc:
                self.error = str(exc)
                _say(f"faust baseline failed: {exc}")
            else:
                self.events_per_s = float(got["events"] / got["seconds"])
                _say(f"faust baseline: {self.events_per_s:,.0f} events/s over {self.events:,} events")
            finally:
                _stop(self.proc)
        return self.events_per_s

    def stop(self) -> None:
        _stop(self.proc)


# -- live: maximum sustainable rate and freshness ---------------------------------------------------


@dataclass
class _Windows:
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


class _Publisher:
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
                    futures += await _send_batched(producer, topic, records, self.partitions)
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


def _quantile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


async def _measure_step(
    publisher: _Publisher, windows: _Windows, rate: float, seconds: float, hubs: int
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
    p50 = _quantile(lags, 0.5) if lags else math.inf
    p99 = _quantile(lags, 0.99) if lags else math.inf
    publisher_ok = achieved >= 0.95 * rate
    return {
        "rate": round(rate),
        "achieved_events_per_s": round(achieved),
        "windows": len(expected),
        "missing_windows": missing,
        "p50_ms": round(p50, 1) if p50 != math.inf else None,
        "p99_ms": round(p99, 1) if p99 != math.inf else None,
        "publisher_ok": publisher_ok,
        "ok": publisher_ok and p99 <= FRESHNESS_LIMIT_MS,
    }


def _step_line(form: str, step: dict[str, Any]) -> str:
    p99 = step["p99_ms"]
    p99_text = f"{p99:,.0f} ms" if p99 is not None else f"> {DRAIN_S * 1000:,.0f} ms"
    return (
        f"{form}: {step['rate']:,} events/s (sent {step['achieved_events_per_s']:,}/s): freshness p50 "
        f"{step['p50_ms'] if step['p50_ms'] is not None else '-'} ms, p99 {p99_text} over "
        f"{step['windows']} windows ({step['missing_windows']} without a result) -> "
        f"{'ok' if step['ok'] else 'FAIL'}"
    )


async def _live(
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
    topics = _topics(tag, partitions)
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), pipeline_topics(topics))
    _say(f"{form}: live phase: starting a worker (1 s windows, 0.2 s grace)")
    worker = _Worker(bootstrap, topics, tmp, tag, window_s=WINDOW_MS / 1000, grace_s=GRACE_MS / 1000)
    # A short fetch wait: Tansu holds a fetch for the whole wait (500 ms by default) even when data
    # is there, which would add to every measured delay.
    consumer = AIOKafkaConsumer(
        topics.windows,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    producer = _producer(bootstrap, linger_ms=2)
    await consumer.start()
    await producer.start()
    windows = _Windows(consumer)
    reader = asyncio.create_task(windows.run())
    publisher = _Publisher(producer, topics.events, form, hubs, partitions)
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
            _say(f"{form}: the worker did not catch up with the warm-up within 60 s")
        # The ladder's time: LADDER_STEPS steps' worth; the 80% phase comes on top.
        ladder_end = time.monotonic() + LADDER_STEPS * (step_s + DRAIN_S + 1)
        rate = float(start_rate)
        while rate <= max_rate:
            step = await _measure_step(publisher, windows, rate, step_s, hubs)
            steps.append(step)
            _say(_step_line(form, step))
            if not step["ok"]:
                stop_reason = "freshness p99 > 1 s" if step["publisher_ok"] else "publisher below the rate"
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
                step = await _measure_step(publisher, windows, rate, step_s, hubs)
                steps.append(step)
                _say(_step_line(form, step) + " (stepping down)")
        passed = [s["rate"] for s in steps if s["ok"]]
        max_ok = max(passed) if passed else None
        if max_ok is not None:
            catchup[1], done = await worker.caught_up(CATCHUP_S)
            if not done:
                _say(f"{form}: the worker did not catch up within {CATCHUP_S:.0f}s; measuring 80% anyway")
            at_80 = await _measure_step(publisher, windows, 0.8 * max_ok, step_s, hubs)
            _say(_step_line(form, at_80) + " (80% of the maximum)")
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await producer.stop()
        await consumer.stop()
        worker.stop()
    # How the live traffic reached the worker: events per ingested record, state bytes per event.
    live_events = publisher.seq
    ingested = await _records_in(bootstrap, topics.ingested, partitions)
    changelog = await _changelog_bytes(bootstrap, worker.app_id)
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


# -- the run ----------------------------------------------------------------------------------------


def _meets(form: str, result: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for key, target in TARGETS[form].items():
        value = result.get(key)
        if value is None:
            out[key] = None
        elif key.startswith("vs_"):
            out[key] = bool(value >= target)
        else:
            out[key] = bool(value <= target)
    return out


def run_bench(
    *,
    events: int,
    bootstrap: str | None,
    forms: tuple[str, ...] = FORMS,
    hubs: int = 50,
    partitions: int = 2,
    flush_every: int = 10_000,
    baseline_events: int = 20_000,
    step_s: float = 8.0,
    start_rate: int = 1000,
    max_rate: int = 64_000,
    quick: bool = False,
) -> dict[str, Any]:
    broker = None
    engine = "configured"
    if bootstrap is None:
        from contest_telemetry.broker import TansuBroker

        _say("starting an embedded Tansu broker")
        broker = TansuBroker().start()
        bootstrap, engine = broker.bootstrap, "embedded"
    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-"))
    _say(f"broker {engine} at {bootstrap}; logs in {tmp}")
    baseline: _Baseline | None = None
    load_start = round(os.getloadavg()[0], 2)
    try:
        span_ms = max(600_000.0, events * 4.0)
        # Event times of the last minutes: recent, never old.
        data = generate(events, hubs, start_ms=time.time() * 1000 - span_ms - 60_000, span_ms=span_ms)
        n = len(data)
        singles = as_singles(data)
        single_size = sum(len(k) + len(v) for k, v in singles) / n
        m = min(baseline_events, n)
        if m:
            _say(f"starting the faust baseline over {m:,} single-event records")
            baseline = _Baseline(bootstrap, tmp, singles[:m], partitions)
        results: dict[str, dict[str, Any]] = {}
        for form in forms:
            records = singles if form == "single" else as_envelopes(data, flush_every)
            r = asyncio.run(
                _throughput(
                    bootstrap, tmp, form, records, n, partitions, before=baseline.result if baseline else None
                )
            )
            faust_eps = baseline.events_per_s if baseline else None
            r["faust_events_per_s"] = round(faust_eps) if faust_eps else None
            r["faust_events"] = m
            r["faust_error"] = baseline.error if baseline else None
            r["faust_source"] = (
                "single-event records" if form == "single" else "single-event records (not envelopes)"
            )
            eps = r["events_per_s"]
            r["vs_faust"] = round(eps / faust_eps, 2) if faust_eps and eps else None
            r["changelog_vs_event_size"] = (
                round(r["changelog_bytes_per_event"] / single_size, 2)
                if form == "single" and r["changelog_bytes_per_event"] is not None
                else None
            )
            _say(
                f"{form}: ceiling {_fmt(r['ceiling_events_per_s'])}/s (x{r['vs_ceiling']}), "
                f"changelog {r['changelog_bytes_per_event']} B/event"
            )
            r.update(dict.fromkeys(LIVE_KEYS))
            r["live_error"] = None
            if step_s:
                try:
                    r.update(
                        asyncio.run(
                            _live(bootstrap, tmp, form, partitions, hubs, step_s, start_rate, max_rate)
                        )
                    )
                except (RuntimeError, TimeoutError, KafkaError) as exc:
                    _say(f"{form}: live phase failed: {exc}")
                    r["live_error"] = f"{type(exc).__name__}: {exc}"
            r["targets"] = TARGETS[form]
            r["meets"] = _meets(form, r)
            results[form] = r
    finally:
        if baseline is not None:
            baseline.stop()
        if broker is not None:
            broker.stop()
    return {
        "broker": engine,
        "code": _code_version(),
        # The machine is shared: its load around the run, to read the figures with.
        "load_avg_1m": [load_start, round(os.getloadavg()[0], 2)],
        "events": n,
        "hubs": hubs,
        "partitions": partitions,
        "quick": quick,
        "single_event_record_bytes": round(single_size, 1),
        "step_s": step_s,
        "forms": results,
    }


def _code_version() -> dict[str, Any] | None:
    """The commit measured and whether the work tree differs from it (None outside a git tree)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return {"git_head": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def _fmt(v: Any, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def _mark(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISS")


def _print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    single, envelope = TARGETS["single"], TARGETS["envelope"]
    table = Table(
        title=f"stream throughput: {result['broker']} broker, {result['events']:,} events, "
        f"{result['partitions']} partitions{', quick' if result['quick'] else ''}",
        caption=(
            "events/s: first publish to the N-th event applied (worker + its ingest child). ceiling: "
            "aiokafka getmany + decode_events of the same records. faust: the idiomatic per-event loop, "
            "over single-event records for both forms. changelog: key+value bytes written per event "
            "(single: x the mean event record). max rate: last live step with freshness p99 <= 1 s. "
            f"Targets: x ceiling >= {single['vs_ceiling']:g} (single), >= {envelope['vs_ceiling']:g} "
            f"(envelope); x faust >= {envelope['vs_faust']:g} (envelope); changelog <= "
            f"{single['changelog_vs_event_size']:g}x event (single); p99 at 80% <= "
            f"{FRESHNESS_LIMIT_MS:,.0f} ms."
        ),
    )
    for name in (
        "form",
        "events/s",
        "ceiling/s",
        "x ceiling",
        "faust/s",
        "x faust",
        "changelog B/event",
        "RSS MB worker / ingest",
        "max rate/s",
        "p99 @80% ms",
    ):
        table.add_column(name, justify="left" if name == "form" else "right")
    for form, r in result["forms"].items():
        meets = r.get("meets", {})
        changelog = _fmt(r["changelog_bytes_per_event"], ",.1f")
        if r.get("changelog_vs_event_size") is not None:
            changelog += f" ({r['changelog_vs_event_size']}x{_mark(meets.get('changelog_vs_event_size'))})"
        lost = "".join(f" (lost {x['expected'] - x['applied']:,})" for x in r.get("lost_events") or ())
        stop = r.get("max_sustainable_stop") or ""
        table.add_row(
            form,
            _fmt(r["events_per_s"]) + lost,
            _fmt(r["ceiling_events_per_s"]),
            _fmt(r["vs_ceiling"], ".3f") + _mark(meets.get("vs_ceiling")),
            _fmt(r["faust_events_per_s"]),
            _fmt(r["vs_faust"], ".1f") + _mark(meets.get("vs_faust")),
            changelog,
            f"{_fmt(r['worker_peak_rss_mb'], '.0f')} / {_fmt(r['ingest_peak_rss_mb'], '.0f')}",
            _fmt(r.get("max_sustainable_events_per_s")) + (" (>=)" if stop.startswith("every") else ""),
            _fmt(r.get("freshness_p99_at_80pct_ms")) + _mark(meets.get("freshness_p99_at_80pct_ms")),
        )
    console = Console(stderr=True)
    if not console.is_terminal:  # a log or a pipe: room for the whole row
        console = Console(stderr=True, width=170)
    console.print(table)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser("bench", help="stream worker throughput benchmark")
    add_arguments(p)
    p.set_defaults(func=run)
    return p


QUICK = {"events": 40_000, "baseline_events": 5_000, "step_s": 4.0}
DEFAULTS = {"events": 200_000, "baseline_events": 20_000, "step_s": 8.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--form",
        choices=("single", "envelope", "both"),
        default="both",
        help="how hubs publish the events: one per record, envelopes, or both in one run (default)",
    )
    p.add_argument("--quick", action="store_true", help="a smaller run: 40k events, 4 s live steps")
    p.add_argument("--events", type=int, help=f"events to publish (default {DEFAULTS['events']:,})")
    p.add_argument("--hubs", type=int, default=50)
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument(
        "--baseline-events",
        type=int,
        help=f"events for the faust baseline (default {DEFAULTS['baseline_events']:,})",
    )
    p.add_argument("--step-s", type=float, help="seconds per live step (default 8; 0 skips the live phase)")
    p.add_argument("--start-rate", type=int, default=1000, help="first live step, events/s (doubles)")
    p.add_argument("--max-rate", type=int, default=64_000, help="no live step above this rate")
    p.add_argument(
        "--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS, else embedded)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _size(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    if value is not None:
        return value
    return (QUICK if getattr(args, "quick", False) else DEFAULTS)[name]


def run(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    form = getattr(args, "form", "both")
    result = run_bench(
        events=_size(args, "events"),
        bootstrap=bootstrap,
        forms=FORMS if form == "both" else (form,),
        hubs=args.hubs,
        partitions=args.partitions,
        baseline_events=_size(args, "baseline_events"),
        step_s=_size(args, "step_s"),
        start_rate=getattr(args, "start_rate", 1000),
        max_rate=getattr(args, "max_rate", 64_000),
        quick=bool(getattr(args, "quick", False)),
    )
    _print_table(result)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stream_throughput", description=(__doc__ or "").split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
