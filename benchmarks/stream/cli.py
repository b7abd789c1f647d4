"""The command line of ``benchmarks/stream_throughput.py`` and the run over every form."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

import benchmarks.stream
from benchmarks.stream.baselines import Baseline
from benchmarks.stream.common import say
from benchmarks.stream.forms import FORMS, as_envelopes, as_singles, generate
from benchmarks.stream.live import LIVE_KEYS, run_live
from benchmarks.stream.report import TARGETS, code_version, fmt, meets_targets, print_table
from benchmarks.stream.throughput import throughput


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

        say("starting an embedded Tansu broker")
        broker = TansuBroker().start()
        bootstrap, engine = broker.bootstrap, "embedded"
    tmp = Path(tempfile.mkdtemp(prefix="ct-bench-"))
    say(f"broker {engine} at {bootstrap}; logs in {tmp}")
    baseline: Baseline | None = None
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
            say(f"starting the faust baseline over {m:,} single-event records")
            baseline = Baseline(bootstrap, tmp, singles[:m], partitions)
        results: dict[str, dict[str, Any]] = {}
        for form in forms:
            records = singles if form == "single" else as_envelopes(data, flush_every)
            r = asyncio.run(
                throughput(
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
            say(
                f"{form}: ceiling {fmt(r['ceiling_events_per_s'])}/s (x{r['vs_ceiling']}), "
                f"changelog {r['changelog_bytes_per_event']} B/event"
            )
            r.update(dict.fromkeys(LIVE_KEYS))
            r["live_error"] = None
            if step_s:
                try:
                    r.update(
                        asyncio.run(
                            run_live(bootstrap, tmp, form, partitions, hubs, step_s, start_rate, max_rate)
                        )
                    )
                except (RuntimeError, TimeoutError, KafkaError) as exc:
                    say(f"{form}: live phase failed: {exc}")
                    r["live_error"] = f"{type(exc).__name__}: {exc}"
            r["targets"] = TARGETS[form]
            r["meets"] = meets_targets(form, r)
            results[form] = r
    finally:
        if baseline is not None:
            baseline.stop()
        if broker is not None:
            broker.stop()
    return {
        "broker": engine,
        "code": code_version(),
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


def size_of(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name, None)
    if value is not None:
        return value
    return (QUICK if getattr(args, "quick", False) else DEFAULTS)[name]


def run(args: argparse.Namespace) -> int:
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
    form = getattr(args, "form", "both")
    result = run_bench(
        events=size_of(args, "events"),
        bootstrap=bootstrap,
        forms=FORMS if form == "both" else (form,),
        hubs=args.hubs,
        partitions=args.partitions,
        baseline_events=size_of(args, "baseline_events"),
        step_s=size_of(args, "step_s"),
        start_rate=getattr(args, "start_rate", 1000),
        max_rate=getattr(args, "max_rate", 64_000),
        quick=bool(getattr(args, "quick", False)),
    )
    print_table(result)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stream_throughput", description=(benchmarks.stream.__doc__ or "").split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
