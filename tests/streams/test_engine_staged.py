"""Staged writes (the worker's default, ``CT_WORKER_STATE_FLUSH_S`` > 0): records change only the
engine's caches and :meth:`Engine.flush` writes every key touched since the last flush once, in the
crash-safe order. A flush must then behave like one large record: a crash after any prefix of it,
followed by reading again from where the recovered table says, gives the reference windows."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.settings import WorkerSettings
from tests.helpers.streams_reference import T0, P, check_all, iso, make_events, reference_windows
from tests.streams.engine_harness import Harness, forms

FORMS = ["single", "envelope", "ingested-single", "ingested-envelope"]


def _tick(h: Harness, form: str, t_ms: float, offset: int) -> None:
    ev = {"message": P + "armed", "timestamp": iso(t_ms), "hubId": "tick-0", "contestKey": "k"}
    [(hub, value)] = forms([ev])[form]
    if form.startswith("ingested"):
        value = value.replace(b'"offsets":[0]', b'"offsets":[%d]' % offset)
    h.feed(0, hub, value, offset=offset)
    h.flush()


def _results(h: Harness, end_ms: float) -> list[dict]:
    return [w for w in h.windows if w["windowStartMs"] < end_ms and not w["hubId"].startswith("tick")]


@pytest.mark.parametrize("form", FORMS)
def test_staged_writes_match_the_reference_and_write_less(form: str) -> None:
    events = make_events(hubs=3, contests_per_hub=120, span_ms=300_000, seed=31)
    recs = forms(events)[form]
    per_record, staged = Harness(), Harness(stage=True)
    for i, (hub, value) in enumerate(recs):
        per_record.feed(0, hub, value)
        out = staged.feed(0, hub, value)
        assert out.writes == []  # nothing written until the flush
        if i % 10 == 9:
            staged.flush()
    staged.flush()
    # Reloaded from their tables, both hold the same open contests and windows.
    per_record.restart()
    staged.restart()
    for h in (per_record, staged):
        h.feed(0, *forms([{**events[0], "hubId": "tick-probe"}])["single"][0], offset=10**5)

    def held(h: Harness) -> dict:
        return {
            hub: (sorted(hs.lifecycle.items(), key=str), sorted(hs.open), hs.applied)
            for hub, hs in h.engine.hubs.items()
        }

    assert held(staged) == held(per_record)
    staged.flush()
    _tick(staged, form, T0 + 3_600_000, 10**6)
    assert check_all(_results(staged, T0 + 3_000_000), reference_windows(events)) == []
    assert len({r["eventId"] for r in staged.records}) == 360


@pytest.mark.parametrize("form", FORMS)
def test_crash_after_any_prefix_of_a_flush_changes_nothing(form: str) -> None:
    """Flush every 1-12 records; at random flushes the process dies after a random prefix of the
    flush's writes (or before flushing at all) and starts again from the recovered table, reading
    again from a few records before the last complete flush (a committed offset is never past it)."""
    events = make_events(hubs=3, contests_per_hub=100, span_ms=300_000, seed=9)
    recs = forms(events)[form]
    rng = random.Random(f"staged-{form}")
    every = max(2, min(12, len(recs) // 25))  # flushes every 1..every records: 12+ per stream
    h = Harness(stage=True)
    i = 0
    durable = 0  # records [0, durable) are in the table
    since = 0
    crashes = 0
    while i < len(recs):
        hub, value = recs[i]
        h.feed(0, hub, value, offset=i)
        i += 1
        since += 1
        if since < rng.randint(1, every):
            continue
        since = 0
        if rng.random() < 0.25:
            crashes += 1
            out = h.engine.flush()
            h.write(out.writes[: rng.randint(0, len(out.writes))])
            h.restart()
            i = max(0, durable - rng.randint(0, 3))
            continue
        h.flush()
        durable = i
    h.flush()
    assert crashes >= 3
    _tick(h, form, T0 + 3_600_000, 10**6)
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []
    h.restart()  # and what the table holds decodes again
    _tick(h, form, T0 + 3_700_000, 10**6 + 1)


def test_staged_state_is_small_and_finished_contests_never_reach_the_table() -> None:
    """Contests that start and finish between two flushes are never written: bytes per event
    fall well below the per-record writes of the same events."""
    events = make_events(hubs=2, contests_per_hub=200, span_ms=300_000, seed=4)
    recs = forms(events)["ingested-single"]
    sizes = {}
    for stage in (False, True):
        h = Harness(stage=stage)
        total = 0
        for i, (hub, value) in enumerate(recs):
            out = h.feed(0, hub, value)
            total += sum(len(v) for _, v in out.writes if v is not None)
            if stage and i % 20 == 19:
                total += sum(len(v) for _, v in h.flush().writes if v is not None)
        if stage:
            total += sum(len(v) for _, v in h.flush().writes if v is not None)
        sizes[stage] = total
    assert sizes[True] * 2 < sizes[False], sizes


def test_a_hub_evicted_and_back_within_one_flush_keeps_its_new_state() -> None:
    settings = WorkerSettings(window_s=60, grace_s=0, retained_windows=2, rolling_windows=1)
    h = Harness(settings, stage=True)

    def armed(hub: str, n: int, t: float) -> bytes:
        ev = {"message": P + "armed", "timestamp": iso(t), "hubId": hub, "roomId": "r", "contestKey": f"k{n}"}
        return orjson.dumps(ev)

    expired = {"message": P + "expired", "timestamp": iso(T0 + 1), "hubId": "a", "roomId": "r"}
    h.feed(0, "a", armed("a", 0, T0))
    h.flush()
    h.feed(0, "a", orjson.dumps({**expired, "contestKey": "k0", "expiredAt": T0 + 1}))
    h.flush()
    for minute in range(1, 7):  # another hub moves the watermark on: "a" is evicted
        h.feed(0, "b", armed("b", minute, T0 + minute * 60_000))
        if minute == 2:
            h.flush()  # "a" closed its window here: a hub dirty since the last flush stays
    assert "a" not in h.engine.hubs
    h.feed(0, "a", armed("a", 1, T0 + 6 * 60_000 + 1))  # and back before the flush
    h.flush()
    assert "h:a" in h.store and "l:a\x1fa\x1fr\x1fk1" in h.store
    assert "l:a\x1fa\x1fr\x1fk0" not in h.store
    h.restart()
    h.feed(0, "a", armed("a", 2, T0 + 6 * 60_000 + 2))
    assert len(h.engine.hubs["a"].lifecycle) == 2


def test_a_failing_record_rewinds_then_is_dead_lettered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged mode: the caches dropped by the last-resort guard held records not yet flushed, so
    the engine asks to read again from its applied offset (``rewound``); the failing record,
    reached again, is dead-lettered and the other hubs' windows equal the reference."""
    from streams.lifecycle import Lifecycle

    real = Lifecycle.apply

    def apply(self: Lifecycle, hub: str, ev: dict, t: float):  # type: ignore[no-untyped-def]
        if hub == "boom":
            raise RuntimeError("injected")
        return real(self, hub, ev, t)

    monkeypatch.setattr(Lifecycle, "apply", apply)
    events = make_events(hubs=2, contests_per_hub=60, span_ms=240_000, seed=8)
    recs = [(ev["hubId"], orjson.dumps(ev)) for ev in events]
    boom_at = len(recs) // 2
    recs.insert(boom_at, ("boom", orjson.dumps(dict(events[0], hubId="boom"))))
    h = Harness(stage=True)
    i = rewinds = 0
    while i < len(recs):
        hub, value = recs[i]
        out = h.feed(0, hub, value, offset=i)
        if out.rewound:
            rewinds += 1
            i = h.engine.applied(0) + 1  # what the worker's re-read does
            continue
        i += 1
        if i % 25 == 0:
            h.flush()
    h.flush()
    assert rewinds == 1
    _tick(h, "single", T0 + 3_600_000, 10**6)
    assert [(d["reason"], d["source"]["offset"]) for d in h.dlq] == [("processing", boom_at)]
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []
