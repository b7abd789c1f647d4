"""Worker memory with many hubs: RSS of the stream engine holding 1,000 active hubs with 15
retained closed windows each (the issue's budget: <= 512 MB), against the interpreter with the
same modules imported and no state (the baseline), in one run; with ``--open-contests N``, also
one hub holding N open (launched, unresolved) contests on top.

    python benchmarks/stream_memory.py [--hubs 1000] [--windows 15] [--contests 40] [--open-contests 100000] [--json]

The engine is driven in-process with a dict as its table (no broker), exactly as the faust agent
drives it; every write the engine asks for is applied to the dict, as the changelog would hold it.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import sys
import time
from typing import Any

from contest_telemetry.schema import encode_envelope
from streams.processor import Engine
from streams.settings import WorkerSettings
from streams.state import as_bytes, closed_key, split_lines

BASE_MS = 1_762_243_200_000  # 2025-11-04T08:00:00Z, a window boundary


def _rss_mb() -> tuple[float, float]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024.0
    return fields["VmRSS"], fields["VmHWM"]


def _iso(ms: float) -> str:
    seconds, millis = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _window_events(
    rng: random.Random, hub: int, window: int, contests: int, window_ms: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    start = BASE_MS + window * window_ms
    for c in range(contests):
        at = start + (c + 0.5) * window_ms / contests
        cid = f"h{hub}-w{window}-c{c}"
        arming = round(rng.lognormvariate(math.log(2500), 0.9), 1)
        resolution = round(rng.lognormvariate(math.log(300), 0.8), 1)
        count = rng.choice((1, 2, 2, 3, 4))
        common = {"hubId": f"hub-{hub:04d}", "roomId": f"room-{c % 7}", "contestKey": cid, "contestId": cid}
        events.append(
            {
                "message": "telemetry.contest.launched",
                "timestamp": _iso(at),
                **common,
                "participantCount": count,
                "participantCapacity": 4,
                "armingDurationMs": arming,
            }
        )
        events.append(
            {
                "message": "telemetry.contest.resolved",
                "timestamp": _iso(at + resolution),
                **common,
                "participantCount": count,
                "participantCapacity": 4,
                "outcomeTier": "win",
                "armingDurationMs": arming,
                "resolutionDurationMs": resolution,
            }
        )
    return events


def _apply(store: dict[str, Any], writes: list[tuple[str, bytes | None]]) -> None:
    for key, value in writes:  # as the changelog (and so the table) holds them: None deletes
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def measure(
    hubs: int, windows: int, contests: int, partitions: int = 4, open_contests: int = 0
) -> dict[str, Any]:
    settings = WorkerSettings(window_s=60, grace_s=30, retained_windows=windows)
    store: dict[str, Any] = {}
    engine = Engine(settings, store)
    gc.collect()
    baseline_rss, _ = _rss_mb()
    rng = random.Random(1)
    offsets = [0] * partitions
    events = 0
    began = time.perf_counter()
    # One window more than retained plus the grace: the oldest windows have been evicted, the
    # retained ones are full, and the newest is still open (as in a running worker).
    for window in range(windows + 2):
        for hub in range(hubs):
            batch = _window_events(rng, hub, window, contests, settings.window_ms)
            partition = hub % partitions
            out = engine.process(
                partition,
                offsets[partition],
                f"hub-{hub:04d}".encode(),
                encode_envelope(f"hub-{hub:04d}", batch),
                None,
            )
            offsets[partition] += 1
            events += len(batch)
            _apply(store, out.writes)
    big_writes = 0
    for first in range(0, open_contests, 500):
        at = BASE_MS + (windows + 1) * settings.window_ms
        batch = [
            {
                "message": "telemetry.contest.launched",
                "timestamp": _iso(at + c / 1000),
                "hubId": "hub-big",
                "roomId": f"room-{c % 97}",
                "contestKey": f"open-{c}",
                "contestId": f"open-{c}",
                "participantCount": 2,
                "participantCapacity": 4,
                "armingDurationMs": 1500.0,
                "moderationTags": ["hub-pvp"],
            }
            for c in range(first, min(first + 500, open_contests))
        ]
        out = engine.process(0, offsets[0], b"hub-big", encode_envelope("hub-big", batch), None)
        offsets[0] += 1
        events += len(batch)
        big_writes += sum(len(v) for _, v in out.writes if v is not None)
        _apply(store, out.writes)
    snapshot = engine.snapshot()
    gc.collect()
    rss, peak = _rss_mb()
    # Closed windows retained per hub, as the table (and so a recovering worker) holds them.
    retained = [len(split_lines(as_bytes(store.get(closed_key(f"hub-{h:04d}"))))) for h in range(hubs)]
    return {
        "hubs": hubs,
        "windows_retained_target": windows,
        "contests_per_hub_window": contests,
        "events": events,
        "seconds": round(time.perf_counter() - began, 2),
        "hubs_in_snapshot": len(snapshot.rolling) - (1 if "_all" in snapshot.rolling else 0),
        "retained_windows_min": min(retained) if retained else 0,
        "retained_windows_max": max(retained) if retained else 0,
        "table_bytes_mb": round(sum(len(v) for v in store.values() if isinstance(v, bytes)) / 2**20, 1),
        "baseline_rss_mb": round(baseline_rss, 1),
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
        "state_rss_mb": round(rss - baseline_rss, 1),
        "budget_mb": 512,
        "open_contests": len(engine.hubs["hub-big"].lifecycle) if open_contests else 0,
        "open_contests_state_bytes_per_event": round(big_writes / open_contests, 1)
        if open_contests
        else None,
        "largest_state_value_bytes": max((len(v) for v in store.values() if isinstance(v, bytes)), default=0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hubs", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=15)
    parser.add_argument("--contests", type=int, default=40, help="resolved contests per hub and window")
    parser.add_argument("--open-contests", type=int, default=0, help="open contests of one more hub")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = measure(args.hubs, args.windows, args.contests, open_contests=args.open_contests)
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="stream engine memory")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in report.items():
            table.add_row(key, f"{value:,}" if isinstance(value, int | float) else str(value))
        Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
