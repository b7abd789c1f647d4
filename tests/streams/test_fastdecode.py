"""The fast decoding path (streams/fastdecode.py) against the schema's own validation.

Whatever the fast path accepts, ``validate_event`` must accept with the same values (and value
types, and field order) and event time; whatever the schema rejects, the fast path must not
accept. Records decode to the same events and the same dead letters either way.
"""

from __future__ import annotations

import datetime
import math
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from contest_telemetry.schema import (
    EVENT_MESSAGES,
    EventValidationError,
    decode_record,
    encode_envelope,
    validate_event,
)
from streams.fastdecode import FAST_MESSAGES, decode_events, fast_event, normalise, screen_event_times

P = "telemetry.contest."

_NUMBERS = [0, 1, 17, 1_762_243_200_000, 0.0, 2.5, 1.762243200123e12, 3.0, 253_402_300_799_999]
# Valid-looking extremes (issue: they crash-looped the worker) are validation errors on both paths.
_BAD_NUMBERS: list[Any] = [
    *(-1, -0.5, True, False, "5", None, [1], {"a": 1}, math.nan, math.inf, -math.inf),
    *(253_402_300_800_000, 1e300, 2.0**64),
]
_COUNTS = [0, 1, 2, 5, 2.0, 0.0, 1_000_000]
_BAD_COUNTS: list[Any] = [-1, 2.5, True, "2", math.nan, math.inf, -2.0, [2], 1_000_001, 1e20, 2.0**64]
_TIMESTAMPS = [
    "2025-11-04T08:00:00.123Z",
    "2025-11-04T08:00:00+02:00",
    "2025-11-04T08:00:00",
    "2025-11-04",
    "2025-11-04T08:00:00.123456-05:30",
    "20251104T080000Z",
]
_BAD_TIMESTAMPS: list[Any] = [
    "yesterday",
    "2025-13-01T00:00:00Z",
    "",
    1_762_243_200_000,
    True,
    ["2025-11-04"],
    "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
    "9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
]

_OPTIONAL: dict[str, list[Any]] = {
    "timestamp": [*_TIMESTAMPS, None],
    "level": ["info", "error"],
    "roomId": ["room-1", "", None],
    "eventId": ["e-1", None],
    "schemaVersion": [1, 2, None, 1_000_000],
    "createdAt": [*_NUMBERS, None],
    "startedAt": [*_NUMBERS, None],
    "resolvedAt": [*_NUMBERS, None],
    "expiresAt": [*_NUMBERS, None],
    "expiredAt": [*_NUMBERS, None],
    "participantCount": [*_COUNTS, None],
    "participantCapacity": [*_COUNTS, None],
    "windowMs": [*_NUMBERS, None],
    "armingDurationMs": [*_NUMBERS, None],
    "resolutionDurationMs": [*_NUMBERS, None],
    "label": ["a label", None],
    "move": ["rock", None],
    "type": ["duel", None],
    "moderationTags": [["hub-pvp"], [], ["a", "b"], None],
    "sharedComplicationTags": [["x"], None],
    "workflowId": ["wf-1", None],
    "runId": ["run-1", None],
    "outcomeTier": ["decisive", 2, 0, None],
    "sharedComplicationCount": _COUNTS,
    "error": ["boom", ""],
}
_BAD: dict[str, list[Any]] = {
    "timestamp": _BAD_TIMESTAMPS,
    "level": ["warn", "", None, 1],
    "hubId": ["", None, 1, ["h"]],
    "contestKey": ["", None, 2],
    "contestId": ["", None, 3, True],
    "roomId": [1, True, ["r"]],
    "eventId": [1, {"id": 1}],
    "schemaVersion": [True, 1.0, "1", 1.5],
    "createdAt": _BAD_NUMBERS,
    "startedAt": _BAD_NUMBERS,
    "resolvedAt": _BAD_NUMBERS,
    "expiredAt": _BAD_NUMBERS,
    "participantCount": _BAD_COUNTS,
    "participantCapacity": _BAD_COUNTS,
    "armingDurationMs": _BAD_NUMBERS,
    "resolutionDurationMs": _BAD_NUMBERS,
    "moderationTags": [["a", 1], "a", [None], [["a"]]],
    "outcomeTier": [True, 1.5, ["a"]],
    "sharedComplicationCount": [*_BAD_COUNTS, None],
    "error": [None, 1],
    "label": [1, True],
    "message": [None, 1, ["telemetry.contest.armed"], P + "unknown", "telemetry.contest.batch"],
}
_SNAKE = {
    "hubId": "hub_id",
    "contestKey": "contest_key",
    "contestId": "contest_id",
    "createdAt": "created_at",
}


def _aliases() -> dict[str, set[str]]:
    out = {}
    for message in EVENT_MESSAGES:
        ev = validate_event({"message": message, "hubId": "h", "contestKey": "k", "contestId": "c"})
        out[message] = {info.alias or name for name, info in type(ev).model_fields.items()}
    return out


_ALIASES = _aliases()


def _valid(rng: random.Random, message: str) -> dict[str, Any]:
    ev: dict[str, Any] = {"message": message, "hubId": f"hub-{rng.randrange(3)}", "contestKey": "k1"}
    if message not in (P + "armed", P + "expired"):
        ev["contestId"] = f"c{rng.randrange(100)}"
    names = sorted(n for n in _OPTIONAL if n in _ALIASES[message])
    for name in rng.sample(names, min(len(names), rng.randrange(0, 9))):
        ev[name] = rng.choice(_OPTIONAL[name])
    keys = list(ev)
    rng.shuffle(keys)
    return {k: ev[k] for k in keys}


def _variant(rng: random.Random, ev: dict[str, Any]) -> dict[str, Any]:
    """Valid events, extras, Python names, bad values, missing fields, non-objects."""
    ev = dict(ev)
    r = rng.random()
    if r < 0.35:
        return ev
    if r < 0.45:
        ev[rng.choice(["custom", "contestId", "extra_field", "nested"])] = rng.choice(
            [1, "x", None, {"a": [1]}]
        )
    elif r < 0.52:
        alias = rng.choice([k for k in _SNAKE if k in ev] or ["hubId"])
        if alias in ev:
            ev[_SNAKE[alias]] = ev.pop(alias)
    elif r < 0.58:
        for required in ("hubId", "contestKey", "contestId", "message"):
            if required in ev and rng.random() < 0.5:
                del ev[required]
                break
    elif r < 0.6:
        return rng.choice([[], "event", 5, None, [ev]])  # type: ignore[return-value]
    else:
        name = rng.choice(sorted(_BAD))
        ev[name] = rng.choice(_BAD[name])
    return ev


def _corpus(n: int, seed: int = 11) -> list[Any]:
    rng = random.Random(seed)
    return [_variant(rng, _valid(rng, rng.choice(EVENT_MESSAGES))) for _ in range(n)]


def _typed(d: dict[str, Any]) -> list[tuple[str, type, Any]]:
    return [(k, type(v), v) for k, v in d.items()]


def test_every_event_class_is_fast_pathed() -> None:
    assert set(EVENT_MESSAGES) == FAST_MESSAGES


def test_fast_event_accepts_only_what_the_schema_accepts_with_equal_values() -> None:
    accepted = valid = 0
    for obj in _corpus(6000):
        fast = fast_event(obj)
        try:
            model = validate_event(obj)
        except EventValidationError:
            assert fast is None, obj
            continue
        valid += 1
        if fast is None:
            # It declines a valid event only for an extra field or a field given by its Python name.
            assert not set(obj) <= _ALIASES[obj["message"]], obj
            continue
        accepted += 1
        event, t_ms, _ = fast
        assert _typed(event) == _typed(normalise(model)), obj
        assert t_ms == model.event_time_ms(), obj
    assert valid > 2000 and accepted > 1500


def test_plain_valid_events_are_all_fast_pathed() -> None:
    rng = random.Random(5)
    for _ in range(2000):
        obj = _valid(rng, rng.choice(EVENT_MESSAGES))
        try:
            model = validate_event(obj)
        except EventValidationError:  # e.g. participantCount None on armed (it defaults to 1)
            assert fast_event(obj) is None
            continue
        fast = fast_event(obj)
        assert fast is not None, obj
        assert _typed(fast[0]) == _typed(normalise(model))


def test_fast_path_keeps_no_reference_to_mutable_input() -> None:
    obj = _valid(random.Random(1), P + "armed") | {"moderationTags": ["a"]}
    fast = fast_event(obj)
    assert fast is not None
    obj["moderationTags"].append("b")
    assert fast[0]["moderationTags"] == ["a"]


def _same_decoding(data: bytes | None) -> None:
    fast = decode_events(data)
    slow = decode_record(data)
    assert fast.envelope == slow.envelope
    assert fast.publisher_dropped == slow.publisher_dropped
    assert [_typed(e) for e in fast.events] == [_typed(normalise(e)) for e in slow.events]
    assert fast.times == [e.event_time_ms() for e in slow.events]
    assert [(str(i.error), i.error.reason, i.error.errors, i.index, i.raw) for i in fast.invalid] == [
        (str(i.error), i.error.reason, i.error.errors, i.index, i.raw) for i in slow.invalid
    ]


def test_records_decode_like_the_schema() -> None:
    rng = random.Random(3)
    corpus = [e for e in _corpus(3000, seed=4) if not (isinstance(e, float) and math.isnan(e))]

    def jsonable(e: Any) -> bool:
        try:
            orjson.dumps(e)
        except TypeError:
            return False
        return not any(
            isinstance(v, float) and not math.isfinite(v) for v in (e.values() if isinstance(e, dict) else [])
        )

    corpus = [e for e in corpus if jsonable(e)]
    for i in range(0, len(corpus), 7):
        chunk = corpus[i : i + rng.randrange(1, 12)]
        _same_decoding(encode_envelope("hub-0", chunk, publisher_dropped=rng.choice([0, 0, 3])))
        _same_decoding(orjson.dumps(chunk[0]))
    # Clean envelopes (the fast path end to end).
    for _ in range(200):
        evs = [_valid(rng, rng.choice(EVENT_MESSAGES)) for _ in range(rng.randrange(0, 30))]
        _same_decoding(encode_envelope("hub-1", evs))


@pytest.mark.parametrize(
    "data",
    [
        None,
        b"",
        b"not json",
        b"[1, 2]",
        b"5",
        b'"text"',
        b"{}",
        b'{"message": "telemetry.contest.batch", "events": 5}',
        b'{"message": "telemetry.contest.batch", "events": [], "publisherDropped": true}',
        b'{"message": "telemetry.contest.batch", "events": [], "publisherDropped": 4}',
        b'{"message": "telemetry.contest.batch", "events": [{"message": "telemetry.contest.armed"}, 3]}',
        b'{"message": "telemetry.contest.batch", "hubId": "h"}',
    ],
)
def test_odd_records_decode_like_the_schema(data: bytes | None) -> None:
    _same_decoding(data)


def _at(ms: float, contest: str = "k") -> dict[str, Any]:
    iso = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).isoformat()
    return {"message": P + "armed", "hubId": "h", "contestKey": contest, "timestamp": iso}


def _screened(value: bytes, record_ms: float | None, window: tuple[float | None, float | None]) -> list[Any]:
    """(index, field message) of the events :func:`screen_event_times` moved out of ``value``."""
    decoded = decode_events(value)
    screen_event_times(decoded, record_ms, *window)
    return [(inv.index, str(inv.error)) for inv in decoded.invalid]


_HOUR = 3_600_000.0
_FIVE_MIN = (300_000.0, None)


@pytest.mark.parametrize("record_ms", [None, 0, -1], ids=["none", "zero", "negative"])
def test_a_record_without_a_usable_timestamp_is_screened_against_now(record_ms: float | None) -> None:
    """A record timestamp of None or <= 0 (a producer may send 0) means now, not "no check"."""
    now = time.time() * 1000.0
    assert _screened(orjson.dumps(_at(now + _HOUR)), record_ms, _FIVE_MIN)[0][0] is None
    assert "from now" in _screened(orjson.dumps(_at(now + _HOUR)), record_ms, _FIVE_MIN)[0][1]
    assert _screened(orjson.dumps(_at(now)), record_ms, _FIVE_MIN) == []
    # the past bound too: measured from now
    assert len(_screened(orjson.dumps(_at(now - 2 * _HOUR)), record_ms, (None, _HOUR))) == 1
    assert _screened(orjson.dumps(_at(now - 2 * _HOUR)), record_ms, (None, 3 * _HOUR)) == []


def test_a_record_stamped_ahead_does_not_carry_its_event_past_the_bound() -> None:
    """The reference is min(record timestamp, now): a hub stamping its records 50 minutes ahead
    (the broker accepts up to log.message.timestamp.after.max.ms) cannot move the watermark."""
    now = time.time() * 1000.0
    ahead = now + 50 * 60_000.0
    envelope = encode_envelope("h", [_at(now), _at(ahead, "k2"), _at(now, "k3")])
    got = _screened(envelope, ahead, _FIVE_MIN)
    assert [i for i, _ in got] == [1] and "whichever is earlier" in got[0][1]
    assert _screened(orjson.dumps(_at(ahead)), ahead, _FIVE_MIN) != []
    assert _screened(orjson.dumps(_at(now + 60_000.0)), ahead, _FIVE_MIN) == []


def test_an_old_record_is_still_screened_against_its_own_timestamp() -> None:
    """A backlog read late: the future bound is from its (older) record time, and the past bound
    from the record, not now, so events that were on time when sent pass."""
    record = time.time() * 1000.0 - 10 * _HOUR
    assert _screened(orjson.dumps(_at(record + 2 * _HOUR)), record, _FIVE_MIN) != []
    assert _screened(orjson.dumps(_at(record + 60_000.0)), record, _FIVE_MIN) == []
    assert _screened(orjson.dumps(_at(record - 60_000.0)), record, (300_000.0, _HOUR)) == []
    assert _screened(orjson.dumps(_at(record - 2 * _HOUR)), record, (300_000.0, _HOUR)) != []


def test_no_window_screens_nothing_and_events_without_a_timestamp_pass() -> None:
    far = time.time() * 1000.0 + 100 * _HOUR
    assert _screened(orjson.dumps(_at(far)), 0, (None, None)) == []
    untimed = {k: v for k, v in _at(far).items() if k != "timestamp"}
    assert _screened(orjson.dumps(untimed), 0, (1.0, 1.0)) == []


def test_verbatim_only_when_the_events_are_their_source_objects() -> None:
    """``Decoded.verbatim``: the ingest stage may then splice the record's value in as it came."""
    from contest_telemetry.schema import encode_envelope
    from tests.helpers.streams_reference import make_events

    events = make_events(hubs=1, contests_per_hub=3)
    assert decode_events(orjson.dumps(events[0])).verbatim
    assert decode_events(encode_envelope("hub-0", events)).verbatim
    launched = next(e for e in events if e["message"].endswith("launched"))
    as_float = {**launched, "participantCount": float(launched["participantCount"])}
    decoded = decode_events(orjson.dumps(as_float))
    assert decoded.events and not decoded.verbatim  # normalised to an int: not the source
    decoded = decode_events(orjson.dumps({**events[0], "extra": 1}))
    assert decoded.events and not decoded.verbatim  # the schema's path drops the extra field
    assert not decode_events(encode_envelope("hub-0", [events[0], as_float])).verbatim


_SWITCHED_OFF = textwrap.dedent(
    """
    import sys

    import orjson

    import streams.fastdecode as fd
    from contest_telemetry.schema import decode_record
    from producers.encoding import quick_check
    from tests.streams.test_fastdecode import switch_records

    calls = []

    def counted(data):
        calls.append(data)
        return decode_record(data)

    fd.decode_record = counted
    events, records = switch_records(int(sys.argv[1]))
    decoded = [fd.decode_events(r) for r in records]
    assert calls == records, "every record goes through the schema's path"
    assert not any(d.verbatim for d in decoded)
    assert fd.FAST_MESSAGES == frozenset() and all(fd.fast_event(e) is None for e in events)
    assert not any(quick_check(e)[0] for e in events)
    print(orjson.dumps([[list(e.items()) for e in d.events] + [d.times] for d in decoded]).decode())
    """
)


def switch_records(start_ms: int) -> tuple[list[dict[str, Any]], list[bytes]]:
    """Valid events as single records and as an envelope, plus a record the schema refuses."""
    from tests.helpers.streams_reference import make_events

    events = make_events(hubs=2, contests_per_hub=20, start_ms=start_ms)
    records = [orjson.dumps(e) for e in events] + [encode_envelope("hub-0", events[:50]), b"{}"]
    return events, records


def test_switched_off_every_record_takes_the_schemas_path() -> None:
    """``CT_FAST_PATH_ENABLED=false``: the decoder hands every record to the schema and the
    publisher's check accepts nothing; the records decode to what the fast path gives."""
    root = Path(__file__).resolve().parents[2]
    start_ms = int(time.time() * 1000) - 60_000
    env = {**os.environ, "CT_FAST_PATH_ENABLED": "false", "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-c", _SWITCHED_OFF, str(start_ms)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    events, records = switch_records(start_ms)
    fast = [decode_events(r) for r in records]
    assert sum(d.verbatim for d in fast) == len(events) + 1  # here the fast path took them
    on = [[list(e.items()) for e in d.events] + [d.times] for d in fast]
    assert orjson.loads(done.stdout) == orjson.loads(orjson.dumps(on))


def test_a_bad_switch_value_names_the_variable() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "CT_FAST_PATH_ENABLED": "maybe"}
    done = subprocess.run(
        [sys.executable, "-m", "contest_telemetry", "ingest", "--help"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "CT_FAST_PATH_ENABLED='maybe'" in done.stderr, done.stderr
