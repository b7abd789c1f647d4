"""Test data for the stream processor and an exact reference computation of its windows."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

P = "telemetry.contest."
T0 = 1_762_243_200_000  # 2025-11-04T08:00:00Z, a window boundary for 60 s windows


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def nearest_rank(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    n = len(s)
    return s[min(n - 1, max(0, math.ceil(q * n - 1e-9) - 1))]


def make_events(
    *,
    hubs: int = 4,
    contests_per_hub: int = 200,
    start_ms: int = T0,
    span_ms: int = 240_000,
    seed: int = 7,
    send_durations: float = 0.5,
    fail_ratio: float = 0.1,
) -> list[dict[str, Any]]:
    """Full lifecycles (armed, launched, workflowStarted, resolved | workflowFailed), sorted by
    event time. Durations are sent by the producer for a share of contests, else left for the
    worker to compute from the raw times."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for h in range(hubs):
        hub = f"hub-{h}"
        for c in range(contests_per_hub):
            room, key, cid = f"room-{c % 7}", f"duel:{h}:{c}", f"c-{h}-{c}"
            created = start_ms + rng.uniform(0, span_ms)
            arming = rng.lognormvariate(math.log(2000), 0.8)
            started = created + arming
            resolution = rng.lognormvariate(math.log(300), 0.7)
            resolved = started + resolution
            n = rng.choice([1, 2, 2, 2, 3, 4])
            cap = rng.choice([None, 2, 2, 4])
            send = rng.random() < send_durations
            base = {"level": "info", "hubId": hub, "roomId": room, "contestKey": key, "schemaVersion": 1}
            out.append(
                {
                    **base,
                    "message": P + "armed",
                    "timestamp": iso(created),
                    "participantCount": 1,
                    "participantCapacity": cap,
                    "createdAt": created,
                    "moderationTags": ["hub-pvp"],
                    "eventId": f"{cid}-a",
                }
            )
            launched = {
                **base,
                "message": P + "launched",
                "timestamp": iso(started),
                "contestId": cid,
                "participantCount": n,
                "participantCapacity": cap,
                "startedAt": started,
                "eventId": f"{cid}-l",
            }
            if send:
                launched["armingDurationMs"] = max(0.0, started - created)
            out.append(launched)
            out.append(
                {
                    **base,
                    "message": P + "workflowStarted",
                    "timestamp": iso(started + 1),
                    "contestId": cid,
                    "workflowId": f"wf-{cid}",
                    "runId": None,
                    "eventId": f"{cid}-w",
                }
            )
            if rng.random() < fail_ratio:
                out.append(
                    {
                        **base,
                        "message": P + "workflowFailed",
                        "level": "error",
                        "timestamp": iso(resolved),
                        "contestId": cid,
                        "error": "workflow_failed",
                        "eventId": f"{cid}-f",
                    }
                )
            else:
                ev = {
                    **base,
                    "message": P + "resolved",
                    "timestamp": iso(resolved),
                    "contestId": cid,
                    "participantCount": n,
                    "participantCapacity": cap,
                    "outcomeTier": "decisive",
                    "resolvedAt": resolved,
                    "eventId": f"{cid}-r",
                }
                if send:
                    ev["armingDurationMs"] = max(0.0, started - created)
                    ev["resolutionDurationMs"] = max(0.0, resolved - started)
                out.append(ev)
    out.sort(key=lambda e: e["timestamp"])
    return out


def _ms(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp() * 1000.0


def reference_windows(
    events: list[dict[str, Any]], size_ms: int = 60_000
) -> dict[tuple[str, int], dict[str, Any]]:
    """Exact windows per (hub, start) and per ("_all", start), for data without late events."""
    armed: dict[tuple[str, str, str], dict[str, Any]] = {}
    contests: dict[tuple[str, str], dict[str, Any]] = {}
    acc: dict[tuple[str, int], dict[str, Any]] = defaultdict(
        lambda: {
            "arming": [],
            "resolution": [],
            "contests": 0,
            "participants": [],
            "capacityOverTwo": 0,
            "events": 0,
        }
    )

    def bump(hub: str, t: float) -> list[dict[str, Any]]:
        start = math.floor(t / size_ms) * size_ms
        return [acc[(hub, start)], acc[("_all", start)]]

    for ev in events:
        hub, msg, t = ev["hubId"], ev["message"][len(P) :], _ms(ev["timestamp"])
        targets = bump(hub, t)
        for a in targets:
            a["events"] += 1
        if msg == "armed":
            armed[(hub, ev["roomId"], ev["contestKey"])] = dict(ev)
            continue
        cid = ev.get("contestId")
        if msg == "launched":
            c = armed.pop((hub, ev["roomId"], ev["contestKey"]), {})
            c.update({k: v for k, v in ev.items() if v is not None})
            contests[(hub, cid)] = c
            arming = max(0.0, c["startedAt"] - c["createdAt"])
            c["ar"] = True
            for a in targets:
                a["arming"].append(arming)
        elif msg in ("resolved", "workflowFailed"):
            c = contests.pop((hub, cid))
            c.update({k: v for k, v in ev.items() if v is not None and k != "message"})
            if msg == "resolved":
                for a in targets:
                    a["resolution"].append(max(0.0, c["resolvedAt"] - c["startedAt"]))
            for a in targets:
                a["contests"] += 1
                a["participants"].append(c["participantCount"])
                if (c.get("participantCapacity") or 0) > 2:
                    a["capacityOverTwo"] += 1
    return dict(acc)


def check_result(result: dict[str, Any], ref: dict[str, Any], alpha: float = 0.01) -> list[str]:
    """Differences between a contest.windows payload (or merged partials) and the reference."""
    problems: list[str] = []
    where = f"{result['hubId']}@{result['windowStartMs']}"
    parts = ref["participants"]
    hist: dict[str, int] = defaultdict(int)
    for n in parts:
        hist[str(n)] += 1
    exact = {
        "contests": ref["contests"],
        "events": ref["events"],
        "participantsSum": sum(parts),
        "participantsMax": max(parts) if parts else 0,
        "participantHistogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "multiActorContests": sum(1 for n in parts if n > 2),
        "capacityOverTwo": ref["capacityOverTwo"],
    }
    for k, v in exact.items():
        if result[k] != v:
            problems.append(f"{where} {k}: {result[k]!r} != {v!r}")
    for stage in ("arming", "resolution"):
        values = ref[stage]
        if result[stage]["count"] != len(values):
            problems.append(f"{where} {stage}.count {result[stage]['count']} != {len(values)}")
        for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
            want = nearest_rank(values, q)
            got = result[stage][name]
            if want is None or got is None:
                if want != got:
                    problems.append(f"{where} {stage}.{name} {got} != {want}")
            elif abs(got - want) > alpha * want + 1e-9:
                problems.append(f"{where} {stage}.{name} {got} vs exact {want}")
    return problems


def merge_partials(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge ``_all`` partials of one window (one per partition) into one payload, as a consumer does."""
    from streams.windows import WindowAgg

    agg = WindowAgg.from_result(payloads[0])
    for p in payloads[1:]:
        agg.merge(WindowAgg.from_result(p))
    return agg.to_result("_all", payloads[0]["windowSizeMs"], arming_budget_ms=8000, resolution_budget_ms=800)


def check_all(results: list[dict[str, Any]], reference: dict[tuple[str, int], dict[str, Any]]) -> list[str]:
    """Compare final window results (duplicates by windowId allowed, must be identical) with the reference."""
    problems: list[str] = []
    by_id: dict[str, dict[str, Any]] = {}
    for r in results:
        prev = by_id.get(r["windowId"])
        if prev is not None and prev != r:
            problems.append(f"{r['windowId']}: two different results")
        by_id[r["windowId"]] = r
    hubs: dict[tuple[str, int], dict[str, Any]] = {}
    partials: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in by_id.values():
        if r["hubId"] == "_all":
            partials[r["windowStartMs"]].append(r)
        else:
            hubs[(r["hubId"], r["windowStartMs"])] = r
    for key, r in partials.items():
        hubs[("_all", key)] = merge_partials(r)
    want = {k for k in reference}
    if set(hubs) != want:
        problems.append(
            f"windows differ: missing {sorted(want - set(hubs))[:5]}, extra {sorted(set(hubs) - want)[:5]}"
        )
    for key in sorted(want & set(hubs)):
        problems.extend(check_result(hubs[key], reference[key]))
    return problems
