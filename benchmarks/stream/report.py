"""Targets, the verdict per form and the rich table."""

from __future__ import annotations

import subprocess
from typing import Any

from benchmarks.stream.common import ROOT
from benchmarks.stream.live import FRESHNESS_LIMIT_MS

# Printed beside the figures; ``meets`` in the JSON says whether a form met each.
TARGETS: dict[str, dict[str, float]] = {
    "single": {"vs_ceiling": 0.25, "changelog_vs_event_size": 2.0, "freshness_p99_at_80pct_ms": 1000.0},
    "envelope": {"vs_ceiling": 0.5, "vs_faust": 10.0, "freshness_p99_at_80pct_ms": 1000.0},
}


def meets_targets(form: str, result: dict[str, Any]) -> dict[str, bool | None]:
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


def code_version() -> dict[str, Any] | None:
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


def fmt(v: Any, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def mark(ok: bool | None) -> str:
    return "" if ok is None else (" ok" if ok else " MISS")


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    single, envelope = TARGETS["single"], TARGETS["envelope"]
    table = Table(
        title=f"stream throughput: {result['broker']} broker, {result['events']:,} events, "
        f"{result['partitions']} partitions{', quick' if result['quick'] else ''}",
        caption=(
            "events/s: first publish to the N-th event applied (worker + its ingest child). ceiling: "
            "aiokafka getmany + decode_events of the same records (fastest of 3 reads). faust: the idiomatic per-event loop, "
            "over single-event records for both forms. changelog: key+value bytes written per event "
            "(single: x the mean event record). max rate: highest live step with freshness p99 <= 1 s, "
            "not growing within the step. "
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
        changelog = fmt(r["changelog_bytes_per_event"], ",.1f")
        if r.get("changelog_vs_event_size") is not None:
            changelog += f" ({r['changelog_vs_event_size']}x{mark(meets.get('changelog_vs_event_size'))})"
        lost = "".join(f" (lost {x['expected'] - x['applied']:,})" for x in r.get("lost_events") or ())
        stop = r.get("max_sustainable_stop") or ""
        table.add_row(
            form,
            fmt(r["events_per_s"]) + lost,
            fmt(r["ceiling_events_per_s"]),
            fmt(r["vs_ceiling"], ".3f") + mark(meets.get("vs_ceiling")),
            fmt(r["faust_events_per_s"]),
            fmt(r["vs_faust"], ".1f") + mark(meets.get("vs_faust")),
            changelog,
            f"{fmt(r['worker_peak_rss_mb'], '.0f')} / {fmt(r['ingest_peak_rss_mb'], '.0f')}",
            fmt(r.get("max_sustainable_events_per_s")) + (" (>=)" if stop.startswith("every") else ""),
            fmt(r.get("freshness_p99_at_80pct_ms")) + mark(meets.get("freshness_p99_at_80pct_ms")),
        )
    console = Console(stderr=True)
    if not console.is_terminal:  # a log or a pipe: room for the whole row
        console = Console(stderr=True, width=170)
    console.print(table)
