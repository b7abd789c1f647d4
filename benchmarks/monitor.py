"""Benchmark ``contest-telemetry monitor`` against a plain ``json.loads`` pass over the same log.

Generates an NDJSON contest log (1,000,000 lines by default) in a temporary directory,
then runs each workload in its own subprocess so peak RSS (``VmHWM``) is that
workload's alone:

- ``baseline``: ``json.loads`` of every line, no aggregation;
- ``monitor-text``: the monitor's text summary (keeps no raw failure events);
- ``monitor-json``: the monitor's ``--json`` document, ``raw`` included.

Usage: ``.venv/bin/python benchmarks/monitor.py [--lines N] [--contests N] [--json]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ["generate_log", "main"]

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("baseline", "monitor-text", "monitor-json")


def generate_log(path: Path, lines: int, contests: int, seed: int = 1) -> None:
    """A log shaped like hub traffic: launches, starts, resolves, some failures and junk."""
    rng = random.Random(seed)
    messages = (
        "telemetry.contest.launched",
        "telemetry.contest.workflowStarted",
        "telemetry.contest.resolved",
        "telemetry.contest.workflowFailed",
    )
    weights = (30, 30, 35, 5)
    with path.open("w", encoding="utf-8") as out:
        for index in range(lines):
            if index % 997 == 0:
                out.write("not json\n")
                continue
            message = rng.choices(messages, weights)[0]
            contest = rng.randrange(contests)
            event: dict[str, Any] = {
                "message": message,
                "timestamp": "2025-11-04T08:05:00.000Z",
                "level": "error" if message.endswith("Failed") else "info",
                "hubId": f"hub-{contest % 16}",
                "roomId": f"room-{contest % 500}",
                "contestId": f"contest-{contest}",
                "contestKey": f"key-{contest}",
            }
            if message.endswith("launched") or message.endswith("resolved"):
                event["participantCount"] = rng.choice((1, 2, 2, 2, 3, 4))
                event["participantCapacity"] = rng.choice((None, 2, 4))
                event["armingDurationMs"] = round(rng.lognormvariate(7.5, 0.6), 1)
            if message.endswith("resolved"):
                event["resolutionDurationMs"] = round(rng.lognormvariate(6, 0.5), 1)
                event["outcomeTier"] = rng.choice(("win", "loss", "draw", None))
            out.write(json.dumps(event, separators=(",", ":")) + "\n")


def _peak_rss_kib() -> int:
    # VmHWM is this process's own high-water mark; ru_maxrss is the same figure in KiB on Linux.
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _child(workload: str, path: str) -> None:
    """Run one workload in this process and print its figures as JSON."""
    started = time.perf_counter()
    if workload == "baseline":
        with open(path, "rb") as handle:
            for line in handle:
                if line.strip():
                    with contextlib.suppress(ValueError):
                        json.loads(line)
    else:
        from sinks.monitor.cli import main as monitor_main

        argv = ["--input", path] + (["--json"] if workload == "monitor-json" else [])
        sink = io.TextIOWrapper(open(os.devnull, "wb"), encoding="utf-8")  # noqa: SIM115
        with contextlib.redirect_stdout(sink):
            code = monitor_main(argv)
        if code != 0:
            raise SystemExit(f"monitor exited {code}")
    seconds = time.perf_counter() - started
    print(json.dumps({"workload": workload, "seconds": seconds, "peak_rss_kib": _peak_rss_kib()}))


def _run(workload: str, path: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", workload, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    figures: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="log lines to generate")
    parser.add_argument("--contests", type=int, default=250_000, help="distinct contest ids")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return 0

    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as tmp:
        path = Path(tmp) / "contests.ndjson"
        generate_log(path, args.lines, args.contests)
        size = path.stat().st_size
        results = [_run(workload, path) for workload in WORKLOADS]
    baseline = results[0]["lines_per_s"] = args.lines / results[0]["seconds"]
    for figures in results[1:]:
        figures["lines_per_s"] = args.lines / figures["seconds"]
    for figures in results:
        figures["vs_baseline"] = figures["lines_per_s"] / baseline
    report = {"lines": args.lines, "contests": args.contests, "bytes": size, "results": results}

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    table = Table(
        title=f"monitor over {args.lines:,} lines ({size / 1e6:.0f} MB, {args.contests:,} contest ids)"
    )
    for header in ("workload", "seconds", "lines/s", "vs json.loads", "peak RSS (MiB)"):
        table.add_column(header, justify="left" if header == "workload" else "right")
    for figures in results:
        table.add_row(
            figures["workload"],
            f"{figures['seconds']:.2f}",
            f"{figures['lines_per_s']:,.0f}",
            f"{figures['vs_baseline']:.2f}x",
            f"{figures['peak_rss_kib'] / 1024:.1f}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
