"""The generated contest events and the two forms hubs publish them in (``--form``)."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

import orjson

from contest_telemetry.schema import PREFIX as P
from contest_telemetry.schema import encode_envelope, ms_to_iso

FORMS = ("single", "envelope")


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
