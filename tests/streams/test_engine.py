from __future__ import annotations

import orjson
import pytest

from contest_telemetry.schema import encode_envelope
from streams.settings import WorkerSettings
from tests.helpers.streams_reference import T0, P, check_all, iso, make_events, reference_windows
from tests.streams.engine_harness import Harness, envelopes, forms


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
            h.write(out.writes[: crash_at.pop(i)])
            h.restart()
            i = max(0, i - 5)
            continue
        h.write(out.writes)
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


def _view_figures(view: object) -> tuple[object, ...]:
    a, r = view.arming, view.resolution  # type: ignore[attr-defined]
    return (
        a.count,
        a.quantiles((0.5, 0.95, 0.99)),
        r.count,
        r.quantiles((0.5, 0.95, 0.99)),
        view.contests,
        view.participants_sum,
        view.window_start_ms,
        view.window_end_ms,  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("form", ["single", "envelope", "ingested-single", "ingested-envelope"])
@pytest.mark.parametrize("stage", [False, True], ids=["per-record", "staged"])
def test_snapshot_views_equal_what_a_restarted_worker_reads_back(stage: bool, form: str) -> None:
    """The rolling views are kept from the windows as they close, not decoded again each time:
    they must equal what a worker that starts on the same table decodes from it."""
    events = make_events(hubs=3, contests_per_hub=150, span_ms=600_000)
    h = Harness(stage=stage)
    for hub, value in forms(events)[form]:
        h.feed(0, hub, value)
    _tick_forms(h, form, T0 + 700_000, 10**6)
    if stage:
        h.write(h.engine.flush().writes)
    before = h.engine.snapshot({0})
    again = Harness(h.settings)
    again.store.update(h.store)
    again.engine._load()
    after = again.engine.snapshot({0})
    hubs = {"hub-0", "hub-1", "hub-2"}
    assert hubs <= set(before.rolling)
    for hub in hubs:
        assert _view_figures(before.rolling[hub]) == _view_figures(after.rolling[hub]), hub
        assert _view_figures(before.last[hub]) == _view_figures(after.last[hub]), hub


@pytest.mark.parametrize("bad", [b"", b"null", b"[1,2]"])
def test_odd_values(bad: bytes) -> None:
    h = Harness()
    h.feed(0, None, bad)
    assert len(h.dlq) == 1


FORMS = ["single", "envelope", "ingested-single", "ingested-envelope"]


def _tick_forms(h: Harness, form: str, t_ms: float, offset: int) -> None:
    """A tick at ``offset`` of the worker's input (and of the source, for ingested forms)."""
    ev = {"message": P + "armed", "timestamp": iso(t_ms), "hubId": "tick-0", "contestKey": "k"}
    [(hub, value)] = forms([ev])[form]
    if form.startswith("ingested"):
        value = value.replace(b'"offsets":[0]', b'"offsets":[%d]' % offset)
        assert b'"wm":' in value
    h.feed(0, hub, value, offset=offset)


@pytest.mark.parametrize("form", FORMS)
def test_every_form_matches_the_reference(form: str) -> None:
    events = make_events(hubs=3, contests_per_hub=120, span_ms=300_000, seed=31)
    h = Harness()
    recs = forms(events)[form]
    for hub, value in recs:
        h.feed(0, hub, value)
    _tick_forms(h, form, T0 + 3_600_000, 10**6)
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []
    assert len({r["eventId"] for r in h.records}) == 360


@pytest.mark.parametrize("form", FORMS)
def test_crash_after_any_prefix_of_writes_changes_nothing(form: str) -> None:
    """A crash leaves a prefix of a record's writes in the changelog (streams/state.py); the
    record is processed again from the recovered table. Crash at every 7th record, each time
    after a different prefix, in every input form: the windows still equal the reference."""
    import random

    events = make_events(hubs=3, contests_per_hub=100, span_ms=300_000, seed=9)
    recs = forms(events)[form]
    rng = random.Random(form)
    h = Harness()
    i = 0
    crashed: set[int] = set()
    while i < len(recs):
        hub, value = recs[i]
        out = h.engine.process(0, i, hub.encode(), value, 0.0)
        h.windows.extend(orjson.loads(v) for _, v in out.windows)
        if i % 7 == 3 and i not in crashed:
            crashed.add(i)
            h.write(out.writes[: rng.randint(0, len(out.writes))])
            h.restart()
            i = max(0, i - rng.randint(0, 3))
            continue
        h.write(out.writes)
        i += 1
    _tick_forms(h, form, T0 + 3_600_000, 10**6)
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []
    h.restart()  # and what the table holds decodes again
    _tick_forms(h, form, T0 + 3_700_000, 10**6 + 1)


def test_ingested_duplicates_are_counted_once() -> None:
    """An ingest stage that crashed sends a poll again: same source offsets, new worker offsets."""
    events = make_events(hubs=2, contests_per_hub=80, span_ms=240_000, seed=4)
    recs = forms(events)["ingested-single"]
    h = Harness()
    for hub, value in recs[: len(recs) // 2] + recs[len(recs) // 3 :]:
        h.feed(0, hub, value)
    _tick_forms(h, "ingested-single", T0 + 3_600_000, 10**6)
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []


def _armed(hub: str, n: int, t: float) -> bytes:
    return orjson.dumps(
        {"message": P + "armed", "timestamp": iso(t), "hubId": hub, "roomId": "r", "contestKey": f"k{n}"}
    )


def test_state_bytes_per_event_do_not_grow_with_open_contests() -> None:
    h = Harness()
    sizes = []
    for n in range(3000):
        out = h.feed(0, "h", _armed("h", n, T0 + n))
        if n in (10, 2999):
            sizes.append(sum(len(v) for _, v in out.writes if v is not None))
    assert sizes[1] <= sizes[0] + 16, sizes
    assert sum(1 for k in h.store if k.startswith("l:")) == 3000


def test_finished_contests_leave_the_table() -> None:
    events = make_events(hubs=1, contests_per_hub=40, span_ms=60_000, seed=2)
    h = Harness()
    for hub, value in envelopes(events, per=5):
        h.feed(0, hub, value)
    _tick(h, 0, T0 + 3_600_000)
    h.feed(0, "hub-0", _armed("hub-0", 999, T0 + 3_600_001))  # the hub's next record issues its deletions
    assert [k for k in h.store if k.startswith("l:hub-0")] == ["l:hub-0\x1fa\x1fr\x1fk999"]
    # only the window of that last event is open
    assert [k for k in h.store if k.startswith("w:hub-0")] == [f"w:hub-0\x1f{(T0 + 3_600_001) // 60_000}"]


class _Counts:
    def __init__(self) -> None:
        self.bounds: dict[str, int] = {}

    def __getattr__(self, name: str):  # every other CounterSink method: ignored
        return lambda *a, **k: None

    def state_bound(self, bound: str, n: int = 1) -> None:
        self.bounds[bound] = self.bounds.get(bound, 0) + n


def test_open_contest_bound_expires_the_oldest() -> None:
    from streams.processor import Engine

    settings = WorkerSettings(window_s=60, grace_s=30, max_open_contests=10)
    h = Harness(settings)
    counts = _Counts()
    h.engine = Engine(settings, h.store, counts)  # type: ignore[arg-type]
    for n in range(15):
        h.feed(0, "h", _armed("h", n, T0 + n))
    assert len(h.engine.hubs["h"].lifecycle) == 10
    over = [r for r in h.records if r["lifecycle"] == "overflow"]
    assert [r["contestKey"] for r in over] == [f"k{n}" for n in range(5)]
    assert counts.bounds == {"open_contests": 5}
    assert sum(1 for k in h.store if k.startswith("l:h")) == 10


def test_idle_hubs_are_evicted_after_their_retained_windows() -> None:
    from streams.processor import Engine

    settings = WorkerSettings(window_s=60, grace_s=0, retained_windows=3, rolling_windows=2)
    h = Harness(settings)
    counts = _Counts()
    h.engine = Engine(settings, h.store, counts)  # type: ignore[arg-type]
    events = make_events(hubs=1, contests_per_hub=10, span_ms=30_000, seed=1, fail_ratio=0.0)
    for hub, value in envelopes(events, per=50):
        h.feed(0, hub, value)
    assert "h:hub-0" in h.store
    for minute in range(2, 8):  # another hub moves the watermark on, minute by minute
        h.feed(0, "other", _armed("other", minute, T0 + minute * 60_000))
    assert "hub-0" not in h.engine.hubs
    assert not [k for k in h.store if "hub-0" in k]
    assert counts.bounds.get("idle_hubs") == 1


def test_one_hub_with_100k_open_contests() -> None:
    h = Harness()
    value_max = 0
    for n in range(100_000):
        out = h.feed(0, "big", _armed("big", n, T0 + n))
        value_max = max(value_max, *(len(v) for _, v in out.writes if v is not None))
    assert len(h.engine.hubs["big"].lifecycle) == 100_000
    assert value_max < 2_000
    h.restart()
    h.feed(0, "big", _armed("big", 100_000, T0 + 100_000))
    # Reloaded from the per-contest entries, and the bound (CT_WORKER_MAX_OPEN_CONTESTS) holds.
    assert len(h.engine.hubs["big"].lifecycle) == 100_000
    assert [r["contestKey"] for r in h.records if r["lifecycle"] == "overflow"] == ["k0"]


def test_an_exception_on_one_record_dead_letters_it_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last-resort guard: whatever goes wrong inside one record (here an injected bug that
    fires for one hub) dead-letters that record with reason 'processing'; the caches reload from
    the table, the partition moves on, and the other hubs' windows still equal the reference."""
    from streams.lifecycle import Lifecycle

    real = Lifecycle.apply

    def apply(self: Lifecycle, hub: str, ev: dict, t: float):  # type: ignore[no-untyped-def]
        if hub == "boom":
            raise RuntimeError("injected")
        return real(self, hub, ev, t)

    monkeypatch.setattr(Lifecycle, "apply", apply)
    events = make_events(hubs=2, contests_per_hub=60, span_ms=240_000, seed=8)
    recs = envelopes(events, per=10)
    boom = dict(events[0], hubId="boom")
    h = Harness()
    for i, (hub, value) in enumerate(recs):
        h.feed(0, hub, value)
        if i == len(recs) // 2:
            out = h.feed(0, "boom", orjson.dumps(boom))
            assert [w for w in out.writes if not w[0].startswith("p:")] == []
            again = h.engine.process(0, h.offsets[0] - 1, b"boom", orjson.dumps(boom), 0.0)
            assert again.skipped and not again.dlq  # no loop: the partition is past it
    _tick(h, 0, T0 + 3_600_000)
    assert [(d["reason"], "injected" in d["error"]) for d in h.dlq] == [("processing", True)]
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []


@pytest.mark.parametrize(
    "extreme",
    [
        {"participantCount": 1e20},
        {"participantCount": 2.0**64},
        {"timestamp": "0001-01-01T00:00:00+01:00"},
        {"timestamp": "9999-12-31T23:59:59-05:00"},
        {"createdAt": 1e300},
        {"armingDurationMs": 2.6e14},
    ],
)
def test_valid_looking_extremes_are_dead_lettered(extreme: dict) -> None:
    events = make_events(hubs=1, contests_per_hub=30, span_ms=120_000, seed=6)
    h = Harness()
    for hub, value in envelopes(events[:40], per=10):
        h.feed(0, hub, value)
    h.feed(0, "hub-0", orjson.dumps({**events[1], **extreme}))
    for hub, value in envelopes(events[40:], per=10):
        h.feed(0, hub, value)
    _tick(h, 0, T0 + 3_600_000)
    assert [d["reason"] for d in h.dlq] == ["validation"]
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []


def test_a_far_future_event_is_dead_lettered_not_a_watermark() -> None:
    """A hub clock years ahead would move the watermark and make every other hub late: beyond
    CT_EVENT_TIME_MAX_FUTURE_S (of the record's Kafka timestamp) the event is dead-lettered
    with reason 'event_time', and its envelope's other events are kept."""
    events = make_events(hubs=2, contests_per_hub=40, span_ms=240_000, seed=12)
    h = Harness()
    recs = envelopes(events, per=10)
    for i, (hub, value) in enumerate(recs):
        ts = orjson.loads(value)["events"][0]["timestamp"]
        record_ms = _ms(ts)
        if i == 5:
            future = dict(events[0], hubId=hub, timestamp=iso(record_ms + 10 * 365 * 86_400_000.0))
            value = encode_envelope(hub, [*orjson.loads(value)["events"], future])
        out = h.engine.process(0, i, hub.encode(), value, record_ms)
        h.windows.extend(orjson.loads(v) for _, v in out.windows)
        h.dlq.extend(orjson.loads(v) for _, v, _h in out.dlq)
        h.write(out.writes)
    h.feed(0, "tick-0", _armed("tick-0", 0, T0 + 3_600_000), offset=len(recs))
    assert [(d["reason"], d["index"]) for d in h.dlq] == [("event_time", 10)]
    assert "timestamp" in h.dlq[0]["error"]
    assert check_all(_results(h, T0 + 3_000_000), reference_windows(events)) == []


def _ms(ts: str) -> float:
    from contest_telemetry.schema.events import iso_time_ms

    return iso_time_ms(ts)


def test_a_dead_letter_larger_than_the_limit_keeps_size_and_sha256() -> None:
    """An 800 KB record that is not JSON is 1.07 MB once base64-encoded: its dead letter is cut
    to fit the DLQ topic, keeping the payload's size, sha256 and first bytes."""
    import base64
    import hashlib

    from streams.dlq import MAX_DLQ_BYTES

    junk = b"\xff" + bytes(range(256)) * 3200  # ~800 KB, not JSON
    h = Harness()
    out = h.feed(0, "hub-0", junk)
    [(_key, value, _headers)] = out.dlq
    assert len(value) <= MAX_DLQ_BYTES
    dl = orjson.loads(value)
    assert dl["reason"] == "decode" and dl["payloadTruncated"] is True
    assert dl["payloadBytes"] == len(junk) and dl["payloadSha256"] == hashlib.sha256(junk).hexdigest()
    assert base64.b64decode(dl["payloadHeadBase64"]) == junk[:4096]
    small = h.feed(0, "hub-0", b"\xffsmall").dlq[0][1]
    assert "originalBase64" in orjson.loads(small)  # under the limit nothing changes
