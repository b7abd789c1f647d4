"""Benchmark a scrape of the Prometheus exporter with 100,000 distinct hubs sent.

Feeds ``PipelineCounters`` (cap 500) with every hub (events, late, histograms) and serves a
snapshot holding all hubs in the ``last`` and ``rolling`` views plus ``_all``, then times N scrapes
of each workload in the same run:

- ``exporter-http``: GET /metrics over HTTP from a started exporter (collect + render + transfer);
- ``exporter-render``: ``render_text(registry)`` in process (what the server does per scrape);
- ``exporter-generate_latest``: prometheus_client's ``generate_latest`` of the same registry;
- ``baseline-gauge``: ``generate_latest`` of a prometheus_client labelled ``Gauge`` holding as
  many series as the exporter's page has samples (the client library's own cost for that page);
- ``baseline-counter-http``: GET /metrics of a registry with a single plain ``Counter`` (the HTTP
  floor).

Also reports the CounterSink's cost per call (the worker's hot path). The digest is an exact
sorted-list one (O(1) quantile); a real DDSketch quantile costs a little more per labelled hub.

Usage: ``.venv/bin/python benchmarks/exporter_scrape.py [--hubs N] [--cap N] [--scrapes N] [--json]``
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from rich.console import Console
from rich.table import Table

from sinks.prometheus import (
    ExporterSettings,
    HubWindowView,
    PipelineCollector,
    PipelineCounters,
    PipelineSnapshot,
    start_exporter,
)
from sinks.prometheus.server import render_text

__all__ = ["main"]


class SortedDigest:
    def __init__(self, values: Iterable[float]) -> None:
        self.values = sorted(values)

    @property
    def count(self) -> int:
        return len(self.values)

    def quantile(self, q: float) -> float | None:
        if not self.values:
            return None
        n = len(self.values)
        return self.values[min(n - 1, max(0, math.ceil(q * n) - 1))]


class StaticSource:
    def __init__(self, snap: PipelineSnapshot) -> None:
        self.snap = snap

    def snapshot(self) -> PipelineSnapshot:
        return self.snap


def build(hubs: int, cap: int) -> tuple[CollectorRegistry, float]:
    """The exporter's registry with ``hubs`` distinct hubs sent; also ns per CounterSink call."""
    counters = PipelineCounters(max_hubs=cap)
    names = [f"hub-{i:06d}" for i in range(hubs)]
    calls = 0
    start = time.perf_counter()
    for hub in names:
        counters.events(hub, "armed", 2)
        counters.events(hub, "resolved", 1)
        counters.late(hub)
        counters.multi_actor(hub)
        counters.publisher_dropped(hub, 1)
        counters.observe_arming_ms(hub, (1_200.0, 7_900.0, 9_100.0))
        counters.observe_resolution_ms(hub, (120.0, 850.0))
        calls += 7
    counters.invalid("decode", 3)
    counters.processed(hubs * 3)
    ns_per_call = (time.perf_counter() - start) / calls * 1e9
    arming = SortedDigest(float(v) for v in range(500, 12_000, 250))
    resolution = SortedDigest(float(v) for v in range(50, 1_200, 25))
    views = {
        hub: HubWindowView(hub, arming, resolution, contests=4, participants_sum=10, participants_max=3)
        for hub in names
    }
    views["_all"] = HubWindowView("_all", arming, resolution, contests=hubs * 4, participants_sum=hubs * 10)
    snap = PipelineSnapshot(
        last=views,
        rolling=views,
        watermark_ms=time.time() * 1000 - 5_000,
        newest_event_time_ms=time.time() * 1000 - 1_000,
        lag={("contest.events", p): 10 for p in range(4)},
    )
    registry = CollectorRegistry()
    registry.register(PipelineCollector(counters, StaticSource(snap)))
    return registry, ns_per_call


def baseline_gauge(samples: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauge = Gauge(
        "baseline_latency_seconds", "Same number of series.", ["hub", "view", "quantile"], registry=registry
    )
    for i in range(samples):
        gauge.labels(f"hub-{i // 12:06d}", ("last", "rolling")[i % 2], str(i % 6)).set(i / 7)
    return registry


def time_it(fn: Callable[[], Any], runs: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def http_get(url: str) -> Callable[[], bytes]:
    def get() -> bytes:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return bytes(resp.read())

    return get


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=100_000, help="distinct hub ids sent (default 100000)")
    parser.add_argument("--cap", type=int, default=500, help="CT_EXPORTER_MAX_HUBS (default 500)")
    parser.add_argument("--scrapes", type=int, default=30, help="scrapes timed per workload (default 30)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)

    registry, ns_per_call = build(args.hubs, args.cap)
    page = render_text(registry)
    page_samples = sum(1 for line in page.splitlines() if line and not line.startswith(b"#"))
    hub_labels = {
        line.split(b'hub="', 1)[1].split(b'"', 1)[0] for line in page.splitlines() if b'hub="' in line
    }
    single = CollectorRegistry()
    Counter("baseline_events", "A single plain counter.", registry=single).inc()
    gauge_registry = baseline_gauge(page_samples)

    results: list[dict[str, Any]] = []
    gc.collect()
    with (
        start_exporter(registry, ExporterSettings(port=0)) as exporter,
        start_exporter(single, ExporterSettings(port=0)) as floor,
    ):
        workloads: list[tuple[str, Callable[[], Any], int]] = [
            ("exporter-http", http_get(exporter.url), page_samples),
            ("exporter-render", lambda: render_text(registry), page_samples),
            ("exporter-generate_latest", lambda: generate_latest(registry), page_samples),
            ("baseline-gauge", lambda: generate_latest(gauge_registry), page_samples),
            ("baseline-counter-http", http_get(floor.url), 1),
        ]
        for name, fn, samples in workloads:
            times = time_it(fn, args.scrapes)
            results.append(
                {
                    "workload": name,
                    "samples": samples,
                    "median_ms": round(statistics.median(times), 2),
                    "p99_ms": round(percentile(times, 99), 2),
                    "min_ms": round(min(times), 2),
                }
            )
    baseline = next(r for r in results if r["workload"] == "baseline-gauge")["median_ms"]
    for r in results:
        r["vs_baseline_gauge"] = round(r["median_ms"] / baseline, 2) if baseline else None
    report = {
        "hubs_sent": args.hubs,
        "cap": args.cap,
        "hub_label_values": len(hub_labels),
        "page_bytes": len(page),
        "page_samples": page_samples,
        "scrapes": args.scrapes,
        "sink_ns_per_call": round(ns_per_call),
        "python": sys.version.split()[0],
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(
        title=(
            f"Exporter scrape: {args.hubs:,} hubs sent, cap {args.cap}, {len(hub_labels)} hub label values, "
            f"{page_samples:,} samples, {len(page) / 1e6:.2f} MB, {args.scrapes} scrapes each"
        )
    )
    for header in ("workload", "samples", "median ms", "p99 ms", "min ms", "vs baseline-gauge"):
        table.add_column(header, justify="left" if header == "workload" else "right")
    for r in results:
        table.add_row(
            r["workload"],
            f"{r['samples']:,}",
            f"{r['median_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['min_ms']:.1f}",
            f"{r['vs_baseline_gauge']:.2f}x",
        )
    console = Console()
    console.print(table)
    console.print(f"CounterSink: {ns_per_call:,.0f} ns per call (worker hot path, 100k distinct hubs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
