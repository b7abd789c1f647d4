"""A large generated log against an independent, deliberately naive reference, and streaming memory."""

from __future__ import annotations

import gzip
import json
import math
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sinks.monitor.summary import SummaryBuilder

ROOT = Path(__file__).resolve().parents[3]
MESSAGES = [
    "telemetry.contest.launched",
    "telemetry.contest.resolved",
    "telemetry.contest.resolved",
    "telemetry.contest.workflowStarted",
    "telemetry.contest.workflowFailed",
    "telemetry.contest.armed",
    "telemetry.contest.expired",
    "hub.other",
]
ODD_VALUES: list[Any] = ["250", True, False, None, -3, -0.5, [], {}]


def generate(count: int, seed: int = 7, contests: int = 40_000, outcomes: bool = True) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        roll = rng.random()
        if roll < 0.01:
            yield rng.choice(["", "   ", "garbage", '{"message":', "[]", "null", '{"a": NaN}'])
            continue
        event: dict[str, Any] = {"message": rng.choice(MESSAGES), "hubId": f"hub-{rng.randrange(5)}"}
        if rng.random() < 0.97:
            event["contestId"] = f"contest-{rng.randrange(contests)}"
        event["roomId"] = f"room-{rng.randrange(50)}"
        for field, scale in (
            ("armingDurationMs", 9000),
            ("resolutionDurationMs", 1200),
            ("participantCount", 5),
            ("participantCapacity", 6),
        ):
            pick = rng.random()
            if pick < 0.6:
                event[field] = rng.randrange(scale) if rng.random() < 0.5 else round(rng.random() * scale, 3)
            elif pick < 0.7:
                event[field] = rng.choice(ODD_VALUES)
        if outcomes and rng.random() < 0.5:
            event["outcomeTier"] = rng.choice(["win", "loss", "draw", None, ""])
        yield json.dumps(event)


def is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    )


def nearest_rank(values: list[float], rank: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(rank / 100 * len(ordered)) - 1))]


def reference(
    lines: list[str], arming_budget: float = 8000, resolution_budget: float = 800
) -> dict[str, Any]:
    """The contract read literally: parse everything, then group, then compute."""
    events = []
    for line in lines:
        try:
            events.append(json.loads(line, parse_constant=lambda name: 1 / 0))
        except (ValueError, ZeroDivisionError):
            continue
    contests: dict[str, dict[str, Any]] = {}
    failures = []
    for event in events:
        if not isinstance(event, dict):
            continue
        if event.get("message") == "telemetry.contest.workflowFailed":
            failures.append(event)
            continue
        if not str(event.get("message", "")).startswith("telemetry.contest.") or not event.get("contestId"):
            continue
        record = contests.setdefault(
            event["contestId"],
            {
                "contestId": event["contestId"],
                "hubId": event.get("hubId") or None,
                "roomId": event.get("roomId") or None,
                "armingDurationMs": None,
                "resolutionDurationMs": None,
                "participantCount": None,
                "participantCapacity": None,
                "outcomes": [],
            },
        )
        if event["message"] not in ("telemetry.contest.launched", "telemetry.contest.resolved"):
            continue
        fields = ["armingDurationMs", "participantCount", "participantCapacity"]
        if event["message"] == "telemetry.contest.resolved":
            fields.append("resolutionDurationMs")
            if event.get("outcomeTier"):
                record["outcomes"].append(event["outcomeTier"])
        for field in fields:
            if is_number(event.get(field)):
                record[field] = event[field]
    records = list(contests.values())

    def block(field: str, budget: float) -> dict[str, Any]:
        values = [r[field] for r in records if r[field] is not None]
        p95 = nearest_rank(values, 95)
        return {
            "samples": len(values),
            "missing": len(records) - len(values),
            "p50": nearest_rank(values, 50),
            "p95": p95,
            "max": max(values) if values else None,
            "budget": budget,
            "breached": p95 is not None and p95 > budget,
        }

    counts = sorted(r["participantCount"] for r in records if r["participantCount"] is not None)
    total = 0.0
    for count in counts:
        total += count
    resolution = block("resolutionDurationMs", resolution_budget)
    return {
        "totals": {
            "contestsObserved": len(records),
            "resolvedContests": resolution["samples"],
            "workflowFailures": len(failures),
        },
        "durations": {"arming": block("armingDurationMs", arming_budget), "resolution": resolution},
        "participants": {
            "samples": len(counts),
            "average": total / len(counts) if counts else None,
            "max": counts[-1] if counts else None,
            "multiActorContests": sum(1 for c in counts if c > 2),
            "capacityOverTwo": sum(
                1 for r in records if r["participantCapacity"] is not None and r["participantCapacity"] > 2
            ),
        },
        "raw": {"contests": records, "workflowFailures": failures},
    }


def test_200k_lines_match_the_reference(tmp_path: Path) -> None:
    lines = list(generate(200_000))
    expected = reference(lines, arming_budget=7000, resolution_budget=1100)
    assert expected["totals"]["contestsObserved"] > 30_000  # the generator exercises what it should

    builder = SummaryBuilder()
    builder.feed_lines(line.encode() for line in lines)
    assert builder.build(arming_budget=7000, resolution_budget=1100) == expected

    # And end to end through the CLI, gzipped, with its JavaScript-style JSON.
    path = tmp_path / "large.ndjson.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode(), compresslevel=1))
    result = subprocess.run(
        [sys.executable, "-m", "sinks.monitor", "-i", str(path), "--json",
         "--arming-threshold", "7000", "--resolution-threshold", "1100"],
        capture_output=True, cwd=ROOT, timeout=240, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == expected


def test_memory_does_not_grow_with_line_count() -> None:
    """Few contests, many lines: the builder must hold contests, not lines.

    Outcomes are left out: ``outcomes`` lists every resolve by contract, so they do grow.
    """

    def peak_for(count: int) -> int:
        builder = SummaryBuilder(keep_failures=False)
        tracemalloc.start()
        try:
            builder.feed_lines(
                line.encode() for line in generate(count, seed=3, contests=200, outcomes=False)
            )
            builder.build(include_raw=False)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak_for(10_000), peak_for(100_000)
    assert large < small * 1.5 + 256 * 1024, (small, large)
    assert large < 4 * 1024 * 1024
