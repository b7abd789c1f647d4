from __future__ import annotations

import orjson
import pytest

from contest_telemetry.schema import encode_envelope
from streams.settings import WorkerSettings
from tests.helpers.streams_reference import T0, P, check_all, iso, make_events, reference_windows
from tests.streams.engine_harness import Harness, envelopes


def _tick(h: Harness, partition: int, t_ms: float) -> None:
    """An event far enough ahead to close every window of the data."""
    ev = {"message": P + "armed", "timestamp": iso(t_ms), "hubId": f"tick-{partition}", "contestKey": "k"}
    h.feed(partition, ev["hubId"], orjson.dumps(ev))


def _results(h: Harness, end_ms: float) -> list[dict]:
    return [w for w in h.windows if w["windowStartMs"] < end_ms and not w["hubId"].startswith("tick")]


def test_windows_match_exact_reference() -> None:
    events = make_events(hubs=3, contests_per_hub=300, span_ms=300_000)
    h = Harness()
    for hub, value in envelopes(events, per=40):
        h.feed(0, hub, value)
    _tick(h, 0, T0 + 3_600_000)
    ref = reference_windows(events)
    results = [w for w in h.windows if w["windowStartMs"] < T0 + 3_000_000]
    assert results
    assert check_all(results, ref) == []
    # one record per finished contest, contract-shaped
    assert len(h.records) == 900
    rec = next(r for r in h.records if r["message"] == P + "resolved")
    assert rec["eventId"].startswith("record:") and rec["lifecycle"] == "resolved"
    assert rec["armingDurationMs"] is not None and rec["resolutionDurationMs"] is not None
    assert rec["workflowId"] == f"wf-{rec['contestId']}" and rec["moderationTags"] == ["hub-pvp"]
    assert rec["createdAt"] < rec["startedAt"] < rec["resolvedAt"]


def test_single_events_and_envelopes_are_equivalent() -> None:
    events = make_events(hubs=2, contests_per_hub=50, span_ms=120_000)
    a, b = Harness(), Harness()
    for hub, value in envelopes(events, per=25):
        a.feed(0, hub, value)
    for ev in events:
        b.feed(0, ev["hubId"], orjson.dumps(ev))
    _tick(a, 0, T0 + 3_600_000)
    _tick(b, 0, T0 + 3_600_000)
    key = lambda w: w["windowId"]  # noqa: E731
    assert sorted(_results(a, T0 + 3_000_000), key=key) == sorted(_results(b, T0 + 3_000_000), key=key)


def test_computed_durations_follow_the_contract() -> None:
    base = {"hubId": "h", "roomId": "r", "contestKey": "k", "level": "info"}
    evs = [
        {**base, "message": P + "armed", "timestamp": iso(T0), "createdAt": 100},
        {**base, "message": P + "launched", "timestamp": iso(T0 + 1), "contestId": "c", "startedAt": 340},
        {**base, "message": P + "resolved", "timestamp": iso(T0 + 2), "contestId": "c", "resolvedAt": 920},
    ]
    h = Harness()
    h.feed(0, "h", encode_envelope("h", evs))
    [rec] = h.records
    assert (rec["armingDurationMs"], rec["resolutionDurationMs"]) == (240, 580)
    assert (rec["createdAt"], rec["startedAt"], rec["resolvedAt"]) == (100, 340, 920)


def test_late_events_inside_grace_count_beyond_are_counted_not_windowed() -> None:
    h = Harness(WorkerSettings(window_s=60, grace_s=30))
    base = {"hubId": "h", "roomId": "r", "level": "info"}

    def resolved(i: int, t: float) -> bytes:
        return orjson.dumps(
            {
                **base,
                "message": P + "resolved",
                "timestamp": iso(t),
                "contestId": f"c{i}",
                "contestKey": f"k{i}",
                "resolutionDurationMs": 100 + i,
                "participantCount": 2,
            }
        )

    h.feed(0, "h", resolved(0, T0 + 10_000))  # window 0
    h.feed(0, "h", resolved(1, T0 + 80_000))  # window 1, watermark 80s: window 0 still open (grace)
    h.feed(0, "h", resolved(2, T0 + 20_000))  # late but inside the grace: lands in window 0
    h.feed(0, "h", resolved(3, T0 + 95_000))  # watermark 95s >= 60 + 30: window 0 closes
    h.feed(0, "h", resolved(4, T0 + 30_000))  # beyond the grace: late, counted
    h.feed(0, "h", resolved(5, T0 + 500_000))
    by = {(w["hubId"], w["windowStartMs"]): w for w in h.windows}
    w0, w1 = by[("h", T0)], by[("h", T0 + 60_000)]
    assert w0["resolution"]["count"] == 2 and w0["contests"] == 2 and w0["lateEvents"] == 0
    assert w1["resolution"]["count"] == 2 and w1["lateEvents"] == 1
    assert by[("_all", T0 + 60_000)]["lateEvents"] == 1
    assert len(h.records) == 6  # the late event still reaches the archive
    assert h.engine.hubs["h"].late == 1


def test_replay_after_crash_does_not_double_count() -> None:
    events = make_events(hubs=3, contests_per_hub=150, span_ms=300_000, seed=3)
    recs = envelopes(events, per=30)
    ref_h = Harness()
    for hub, value in recs:
        ref_h.feed(0, hub, value)
    _tick(ref_h, 0, T0 + 3_600_000)

    h = Harness()
    crash_at = {len(recs) // 3: 0, len(recs) // 2: 1, 2 * len(recs) // 3: 2}
    i = 0
    while i < len(recs):
        hub, value = recs[i]
        out = h.engine.process(0, i, hub.encode(), value, 0.0)
        h.windows.extend(orjson.loads(v) for _, v in out.windows)
        if i in crash_at:
            # Only a prefix of this record's writes reaches the changelog; replay from 5 back.
            for k, v in out.writes[: crash_at.pop(i)]:
                h.store[k] = v
            h.restart()
            i = max(0, i - 5)
            continue
        for k, v in out.writes:
            h.store[k] = v
        i += 1
    out = h.engine.process(
        0,
        len(recs),
        b"tick-0",
        orjson.dumps(
            {"message": P + "armed", "timestamp": iso(T0 + 3_600_000), "hubId": "tick-0", "contestKey": "k"}
        ),
        0.0,
    )
    h.windows.extend(orjson.loads(v) for _, v in out.windows)
    ref = reference_windows(events)
    assert check_all(_results(h, T0 + 3_000_000), ref) == []
    assert check_all(_results(ref_h, T0 + 3_000_000), ref) == []


def test_bad_records_go_to_dlq_and_good_events_survive() -> None:
    h = Harness()
    good = make_events(hubs=1, contests_per_hub=2)[:3]
    bad = dict(good[1], participantCount="three")
    h.feed(0, "hub-0", b"\xff\x00junk")
    h.feed(0, "hub-0", orjson.dumps({**good[0], "hubId": 5}))
    h.feed(0, "hub-0", encode_envelope("hub-0", [good[0], bad, good[2]]))
    h.feed(0, "hub-0", orjson.dumps({"message": "telemetry.contest.batch", "hubId": "x", "events": 3}))
    reasons = [(d["reason"], d["index"]) for d in h.dlq]
    assert reasons == [("decode", None), ("validation", None), ("validation", 1), ("envelope", None)]
    assert "originalBase64" in h.dlq[0] and h.dlq[0]["source"]["offset"] == 0
    assert h.dlq[2]["event"]["participantCount"] == "three"
    assert any(e["field"] == "events.1.participantCount" for e in h.dlq[2]["errors"])
    assert len(h.engine.hubs["hub-0"].lifecycle) >= 1  # the good events were applied


def test_ttl_expires_open_contests() -> None:
    h = Harness(WorkerSettings(window_s=60, grace_s=0, lifecycle_ttl_s=120))
    base = {"hubId": "h", "roomId": "r", "level": "info"}
    h.feed(0, "h", orjson.dumps({**base, "message": P + "armed", "timestamp": iso(T0), "contestKey": "k1"}))
    h.feed(
        0,
        "h",
        orjson.dumps(
            {
                **base,
                "message": P + "launched",
                "timestamp": iso(T0 + 1000),
                "contestKey": "k1",
                "contestId": "c1",
            }
        ),
    )
    h.feed(
        0,
        "h",
        orjson.dumps({**base, "message": P + "armed", "timestamp": iso(T0 + 200_000), "contestKey": "k2"}),
    )
    [rec] = h.records
    assert rec["lifecycle"] == "ttl" and rec["contestId"] == "c1"
    assert h.engine.hubs["h"].lifecycle.contests == {}


def test_snapshot_views() -> None:
    events = make_events(hubs=2, contests_per_hub=100, span_ms=300_000)
    h = Harness()
    for hub, value in envelopes(events):
        h.feed(0, hub, value)
    _tick(h, 0, T0 + 400_000)
    snap = h.engine.snapshot({0})
    assert {"hub-0", "hub-1", "_all"} <= set(snap.last)
    assert snap.rolling["_all"].arming.count >= snap.last["_all"].arming.count
    assert snap.rolling["hub-0"].window_end_ms - snap.rolling["hub-0"].window_start_ms == 5 * 60_000
    assert h.engine.snapshot({1}).last == {}


@pytest.mark.parametrize("bad", [b"", b"null", b"[1,2]"])
def test_odd_values(bad: bytes) -> None:
    h = Harness()
    h.feed(0, None, bad)
    assert len(h.dlq) == 1
