"""The whole-path throughput run of one form: publish N events, time until the worker applied them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from benchmarks.stream.baselines import CEILING_READS, read_ceiling
from benchmarks.stream.common import proc_stat, round_or_none, say
from benchmarks.stream.kafka_io import bench_topics, produce, read_changelog
from benchmarks.stream.worker import LostEventsError, Worker, await_applied
from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics


async def throughput(
    bootstrap: str,
    tmp: Path,
    form: str,
    records: list[tuple[bytes, bytes]],
    n: int,
    partitions: int,
    attempts: int = 2,
    before: Callable[[], Awaitable[Any]] | None = None,
) -> dict[str, Any]:
    """:func:`throughput_once`, again on fresh topics (up to ``attempts``) when events were lost;
    ``lost_events`` lists each attempt that lost some."""
    lost: list[dict[str, int]] = []
    error: str | None = None
    for attempt in range(1, attempts + 1):
        try:
            out = await throughput_once(bootstrap, tmp, form, records, n, partitions, before)
        except LostEventsError as exc:
            say(f"{form}: attempt {attempt}: {exc}")
            lost.append({"attempt": attempt, "applied": exc.applied, "expected": exc.expected})
            error = str(exc)
            continue
        except (RuntimeError, TimeoutError, KafkaError) as exc:
            say(f"{form}: throughput run failed: {exc}")
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


async def throughput_once(
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
    topics = bench_topics(tag, partitions)
    await ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), pipeline_topics(topics))
    report = tmp / f"worker-{tag}.json"
    say(f"{form}: starting the worker (and its ingest child)")
    worker = Worker(bootstrap, topics, tmp, tag, bench_expect_events=n, bench_report=report)
    try:
        ready_s = await worker.ready()
        if before is not None:
            await before()
        ingest_pid = worker.ingest_pid()
        ingest_before = proc_stat(ingest_pid) if ingest_pid else None
        worker_before = proc_stat(worker.proc.pid)
        say(f"{form}: ready after {ready_s:.1f}s; publishing {len(records):,} records ({n:,} events)")
        t_pub = time.time()
        publish_s = await produce(bootstrap, topics.events, records, partitions)
        say(f"{form}: published in {publish_s:.1f}s; waiting for the worker to apply {n:,} events")
        result = await await_applied(worker, report, n, 120 + n / 1000)
        t_end = report.stat().st_mtime
        ingest_after = proc_stat(ingest_pid) if ingest_pid else None
        worker_after = proc_stat(worker.proc.pid)
    finally:
        worker.stop()
    whole_s = t_end - t_pub
    eps = n / whole_s
    say(f"{form}: {eps:,.0f} events/s (whole path, {whole_s:.1f}s); reading the ceiling")
    # The best of CEILING_READS: the machine's speed moves between reads (single-event ceilings of
    # 62-103k/s here), and a slow read would flatter the ratio.
    ceiling = max([await read_ceiling(bootstrap, topics.events, n) for _ in range(CEILING_READS)])
    changelog = await read_changelog(bootstrap, worker.app_id)
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
        "worker_main_thread_cpu_s": round_or_none(result.get("main_thread_cpu_s"), 2),
        "worker_process_cpu_s": round_or_none(result.get("process_cpu_s"), 2),
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
