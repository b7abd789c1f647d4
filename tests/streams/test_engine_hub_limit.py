"""CT_WORKER_MAX_HUBS: the events of a hub beyond the limit are dead-lettered (reason hub_limit,
the source record named), counted, and change nothing else; in every form the worker reads."""

from __future__ import annotations

import orjson
import pytest

from streams.counters import CounterSink
from streams.processor import Engine
from streams.settings import WorkerSettings
from tests.helpers.streams_reference import T0, P, check_all, iso, make_events, reference_windows
from tests.streams.engine_harness import Harness, forms

FORMS = ["single", "envelope", "ingested-single", "ingested-envelope"]


class _Bounds(CounterSink):
    def __init__(self) -> None:
        self.bounds: dict[str, int] = {}
        self.invalid_counts: dict[str, int] = {}

    def state_bound(self, bound: str, n: int = 1) -> None:
        self.bounds[bound] = self.bounds.get(bound, 0) + n

    def invalid(self, reason: str, n: int = 1) -> None:
        self.invalid_counts[reason] = self.invalid_counts.get(reason, 0) + n


@pytest.mark.parametrize("form", FORMS)
def test_a_hub_beyond_the_limit_is_dead_lettered_and_the_others_are_exact(form: str) -> None:
    events = make_events(hubs=3, contests_per_hub=60, span_ms=300_000, seed=41)
    settings = WorkerSettings(window_s=60, grace_s=30, max_hubs=2)
    counters = _Bounds()
    h = Harness(settings)
    h.engine = Engine(settings, h.store, counters)
    for hub, value in forms(events)[form]:
        h.feed(0, hub, value)
    # A tick closes every window (its own hub, the fourth, is refused too: its time still counts).
    tick = {"message": P + "armed", "timestamp": iso(T0 + 3_600_000), "hubId": "tick-0", "contestKey": "k"}
    h.feed(0, "tick-0", orjson.dumps(tick))

    # The first two hubs the worker saw are kept (which two depends on the form's record order).
    kept = sorted(h.engine.hubs)
    assert len(kept) == 2 and set(kept) < {ev["hubId"] for ev in events}
    refused = [ev for ev in events if ev["hubId"] not in kept]
    dead = [d for d in h.dlq if d["event"]["hubId"] != "tick-0"]
    assert {d["reason"] for d in h.dlq} == {"hub_limit"}
    assert sorted(d["event"]["eventId"] for d in dead) == sorted(ev["eventId"] for ev in refused)
    assert all("CT_WORKER_MAX_HUBS" in d["error"] for d in dead)
    if form.startswith("ingested"):
        # Named by the source record the ingest stage read, not by the packed record.
        assert {d["source"]["topic"] for d in dead} == {"contest.events"}
        assert len({d["source"]["offset"] for d in dead}) > 1
    assert counters.bounds == {"hubs": len(refused) + 1}
    assert counters.invalid_counts == {"hub_limit": len(refused) + 1}
    windows = [w for w in h.windows if w["windowStartMs"] < T0 + 3_000_000]
    # The partition's _all windows hold the kept hubs' events only.
    assert {w["hubId"] for w in windows} == {*kept, "_all"}
    assert check_all(windows, reference_windows([ev for ev in events if ev["hubId"] in kept])) == []


def test_room_comes_back_when_an_idle_hub_is_evicted() -> None:
    settings = WorkerSettings(window_s=60, grace_s=0, max_hubs=1, idle_hub_windows=1, lifecycle_ttl_s=60)
    h = Harness(settings)
    first = {"message": P + "armed", "timestamp": iso(T0), "hubId": "a", "contestKey": "k"}
    h.feed(0, "a", orjson.dumps(first))
    later = {**first, "hubId": "b", "timestamp": iso(T0 + 1_000)}
    h.feed(0, "b", orjson.dumps(later))
    assert [d["reason"] for d in h.dlq] == ["hub_limit"] and sorted(h.engine.hubs) == ["a"]
    # Hours later: the first record closes a's window and expires its armed contest (refused: a is
    # still there), the next window's evicts the idle a (refused), and then b fits.
    for n in range(3):
        t = T0 + 3 * 3_600_000 + n * 61_000
        h.feed(0, "b", orjson.dumps({**later, "timestamp": iso(t), "contestKey": f"k{n}"}))
    assert [d["reason"] for d in h.dlq] == ["hub_limit"] * 3
    assert sorted(h.engine.hubs) == ["b"]
