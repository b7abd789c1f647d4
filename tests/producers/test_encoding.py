"""The publisher's checks and encoding when an event is recorded (producers/encoding.py), without a
broker: the quick check against the schema, the errors that name the field, byte-identical
envelopes, and the timestamps the ``record_*`` methods write."""

from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import UTC, datetime
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
from producers import ContestPublisher, PublisherSettings
from producers.encoding import EventEncoder, envelope_header, pack_envelope, quick_check
from producers.exceptions import InvalidEventError, PublisherError
from producers.loadgen import LoadGenerator, LoadProfile
from producers.publisher import iso_timestamp
from tests.contest_telemetry.contract_events import ALL

P = "telemetry.contest."
MAX_MILLIS = 253_402_300_799_999

_GOOD: dict[str, list[Any]] = {
    "timestamp": ["2025-11-04T08:00:00.123Z", "2025-11-04T08:00:00+02:00", "2025-11-04", None],
    "level": ["info", "error"],
    "roomId": ["room-1", "", None],
    "eventId": ["e-1", None],
    "schemaVersion": [1, 1_000_000, None],
    "createdAt": [0, 17, 1_762_243_200_000, 2.5, MAX_MILLIS, None],
    "startedAt": [1_762_243_200_000.5, None],
    "resolvedAt": [3, None],
    "expiresAt": [4.0, None],
    "expiredAt": [5, None],
    "participantCount": [0, 2, 1_000_000, 2.0, None],
    "participantCapacity": [3, None],
    "windowMs": [15_000, None],
    "armingDurationMs": [240, 0.0, None],
    "resolutionDurationMs": [580, None],
    "label": ["a label", None],
    "move": ["rock", None],
    "type": ["duel", None],
    "moderationTags": [["hub-pvp"], [], None],
    "sharedComplicationTags": [["x"], None],
    "workflowId": ["wf-1", None],
    "runId": ["run-1", None],
    "outcomeTier": ["decisive", 2, None],
    "sharedComplicationCount": [0, 4],
    "error": ["boom", ""],
}
_NUMBERS_BAD: list[Any] = [
    -1,
    -0.5,
    True,
    "5",
    [1],
    math.nan,
    math.inf,
    -math.inf,
    MAX_MILLIS + 1,
    1e300,
    2**64,
]
_COUNTS_BAD: list[Any] = [-1, 2.5, True, "2", math.nan, math.inf, 1_000_001, 2**70]
_BAD: dict[str, list[Any]] = {
    "timestamp": [
        "yesterday",
        "",
        1_762_243_200_000,
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-05:00",
    ],
    "level": ["warn", "", None, 1],
    "hubId": ["", None, 1, ["h"]],
    "contestKey": ["", None, 2],
    "contestId": ["", None, 3, True],
    "roomId": [1, True, ["r"]],
    "eventId": [1, {"id": 1}],
    "schemaVersion": [True, "1", 1.5, -1],
    "createdAt": _NUMBERS_BAD,
    "startedAt": _NUMBERS_BAD,
    "windowMs": _NUMBERS_BAD,
    "participantCount": _COUNTS_BAD,
    "sharedComplicationCount": [*_COUNTS_BAD, None],
    "moderationTags": [["a", 1], "a", [None], ("a",)],
    "outcomeTier": [True, 1.5, ["a"]],
    "error": [None, 1],
    "label": [1, True],
    "message": [None, 1, P + "unknown", "telemetry.contest.batch"],
}


def _aliases() -> dict[str, set[str]]:
    out = {}
    for message in EVENT_MESSAGES:
        ev = validate_event({"message": message, "hubId": "h", "contestKey": "k", "contestId": "c"})
        out[message] = {info.alias or name for name, info in type(ev).model_fields.items()}
    return out


_ALIASES = _aliases()


def _event(rng: random.Random) -> dict[str, Any]:
    message = rng.choice(EVENT_MESSAGES)
    ev: dict[str, Any] = {"message": message, "hubId": f"hub-{rng.randrange(3)}", "contestKey": "k"}
    if message not in (P + "armed", P + "expired"):
        ev["contestId"] = f"c{rng.randrange(100)}"
    names = sorted(n for n in _GOOD if n in _ALIASES[message])
    for name in rng.sample(names, rng.randrange(0, len(names) + 1)):
        ev[name] = rng.choice(_GOOD[name])
    r = rng.random()
    if r < 0.4:
        name = rng.choice(sorted(_BAD))
        ev[name] = rng.choice(_BAD[name])
    elif r < 0.5:
        ev[rng.choice(["custom", "hub_id", "contest_key", "createdAt"])] = rng.choice([1, "x", None, -5])
    elif r < 0.55:
        del ev[rng.choice(["hubId", "contestKey", "message"])]
    keys = list(ev)
    rng.shuffle(keys)
    return {k: ev[k] for k in keys}


def test_the_quick_check_never_accepts_what_the_schema_refuses() -> None:
    rng = random.Random(7)
    quick = valid = 0
    for _ in range(8000):
        obj = _event(rng)
        ok, t_ms = quick_check(obj)
        try:
            model = validate_event(obj)
        except EventValidationError:
            assert not ok, obj
            continue
        valid += 1
        if ok:
            quick += 1
            assert t_ms == model.event_time_ms(), obj
        else:  # declined a valid event: only for an extra field, or a float count
            assert not set(obj) <= _ALIASES[obj["message"]] or any(
                type(obj.get(k)) is float
                for k in ("participantCount", "participantCapacity", "sharedComplicationCount")
            ), obj
    assert valid > 2000 and quick > 1000


def test_every_record_method_and_contract_event_takes_the_quick_path() -> None:
    async def capture() -> list[dict[str, Any]]:
        gen = LoadGenerator(
            LoadProfile(hubs=5, rate=5_000.0, failure_share=0.3, expire_share=0.3, seed=2),
            start_ms=time.time() * 1000.0 - 60_000,
        )
        pub = ContestPublisher(settings=PublisherSettings(buffer_size=1_000_000))
        pub._open = True  # capture: fill the buffer, never send
        for step in gen.steps_until(gen.start_ms + 5_000):
            await getattr(pub, step.method)(**step.kwargs)
        common = {"hub_id": "h", "room_id": None, "contest_key": "k"}
        await pub.record_expired(**common, created_at=1, expires_at=5, expired_at=6, label="l", at_ms=6)
        await pub.record_armed(
            **common, moderation_tags=["a"], shared_complication_tags=[], participant_capacity=2
        )
        return list(pub._buffer)

    events = asyncio.run(capture())
    assert {e["message"] for e in events} == set(EVENT_MESSAGES)
    for event in [*events, *ALL]:
        assert quick_check(event)[0], event


def test_envelopes_of_encoded_events_are_what_encode_envelope_writes() -> None:
    events = [dict(e, eventId=f"id-{i}") for i, e in enumerate(ALL)]
    for hub in ("hub-1", 'hüb "quoted" \\ \u2028', ""):
        header = envelope_header(hub)
        for dropped in (0, 7):
            packed = pack_envelope(header, [orjson.dumps(e) for e in events], dropped)
            assert packed == encode_envelope(hub, events, dropped)
            decoded = decode_record(packed)
            assert decoded.envelope and not decoded.invalid and len(decoded.events) == len(events)
            assert decoded.publisher_dropped == dropped
    assert pack_envelope(envelope_header("h"), [], 0) == encode_envelope("h", [], 0)


def _armed(**extra: Any) -> dict[str, Any]:
    return {"message": P + "armed", "hubId": "hub-1", "contestKey": "k", "createdAt": 1} | extra


@pytest.mark.parametrize(
    "event,reason,field,why",
    [
        (_armed(big=2**64), "encode", "big", "Integer exceeds 64-bit range"),
        (_armed(meta={"ids": [1, {2, 3}]}), "encode", "meta.ids.1", "not JSON serializable: set"),
        (_armed(meta={"a": {7: "x"}}), "encode", "meta.a.7", "keys must be strings"),
        (_armed(note="bad \ud800 surrogate"), "encode", "note", "surrogates not allowed"),
        (_armed(createdAt=math.nan), "validation", "createdAt", "must be a finite number"),
        (_armed(createdAt=math.inf), "validation", "createdAt", "must be a finite number"),
        (_armed(participantCount=2**65), "validation", "participantCount", "must be <= "),
        (_armed(**{"hubId": ""}), "validation", "hubId", "must not be empty"),
        ({**_armed(), 3: "x"}, "validation", "3", "Keys should be strings"),
        (_armed(message=P + "armd"), "validation", "message", "unknown event"),
        (
            _armed(timestamp="2999-01-01T00:00:00Z"),
            "event_time",
            "timestamp",
            "CT_EVENT_TIME_MAX_FUTURE_S=300",
        ),
        (_armed(tags="x" * 5000), "size", "", "CT_PUBLISHER_MAX_RECORD_BYTES=4096"),
    ],
)
def test_an_event_the_pipeline_would_not_take_is_refused_naming_the_field(
    event: dict[str, Any], reason: str, field: str, why: str
) -> None:
    encoder = EventEncoder(max_bytes=4096, max_future_ms=300_000.0)
    with pytest.raises(InvalidEventError) as info:
        encoder.encode(event)
    error = info.value
    assert isinstance(error, PublisherError) and isinstance(error, ValueError)
    assert error.reason == reason
    assert [e.field for e in error.errors] == [field], error.errors
    assert why in error.errors[0].reason and why in str(error)
    assert "\n" not in str(error)


def test_event_time_bounds_follow_the_pipeline_settings() -> None:
    now = time.time() * 1000.0
    ahead = _armed(timestamp=iso_timestamp(now + 200_000))
    behind = _armed(timestamp=iso_timestamp(now - 3_600_000))
    EventEncoder(max_bytes=1_000_000).encode(ahead)  # no bounds
    EventEncoder(max_bytes=1_000_000, max_future_ms=300_000).encode(ahead)
    with pytest.raises(InvalidEventError, match="CT_EVENT_TIME_MAX_FUTURE_S=100"):
        EventEncoder(max_bytes=1_000_000, max_future_ms=100_000).encode(ahead)
    EventEncoder(max_bytes=1_000_000, max_future_ms=300_000).encode(behind)
    with pytest.raises(InvalidEventError, match="CT_EVENT_TIME_MAX_PAST_S=60") as info:
        EventEncoder(max_bytes=1_000_000, max_past_ms=60_000).encode(behind)
    assert info.value.reason == "event_time"


def test_a_valid_event_encodes_as_orjson_does() -> None:
    encoder = EventEncoder(max_bytes=1_000_000)
    for event in [*ALL, _armed(custom={"nested": [1, "x", None]})]:
        assert encoder.encode(event) == (event["hubId"], orjson.dumps(event))


def test_an_event_naming_hub_id_by_its_python_name_is_keyed_by_it() -> None:
    event = {"message": P + "armed", "hub_id": "hub-7", "contestKey": "k"}
    assert EventEncoder(max_bytes=1_000_000).encode(event) == ("hub-7", orjson.dumps(event))


def _reference_iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_iso_timestamp_writes_what_datetime_writes() -> None:
    rng = random.Random(3)
    values: list[float] = [0, 0.5, 999.9995, -0.5, -1, 1.0005, 253_402_300_799_999, -62_135_596_800_000]
    values += [rng.uniform(-6.2e13, 2.5e14) for _ in range(20_000)]
    values += [
        rng.randrange(0, 2 * 10**12) + rng.choice([0.5, 0.0005, 0.4995, 0.9995, 0.0015])
        for _ in range(20_000)
    ]
    for ms in values:
        assert iso_timestamp(ms) == _reference_iso(ms), ms
    now = datetime.now(UTC).timestamp() * 1000
    assert abs(datetime.fromisoformat(iso_timestamp()).timestamp() * 1000 - now) < 5_000


@pytest.mark.parametrize("at_ms", [math.nan, math.inf, 1e20, 253_402_300_800_000, "soon"])
def test_a_record_time_that_is_no_time_is_refused_naming_at_ms(at_ms: Any) -> None:
    async def record() -> None:
        pub = ContestPublisher(settings=PublisherSettings())
        pub._open = True
        await pub.record_workflow_failed(
            hub_id="h", room_id="r", contest_id="c", contest_key="k", at_ms=at_ms
        )

    with pytest.raises(InvalidEventError) as info:
        asyncio.run(record())
    assert [e.field for e in info.value.errors] == ["at_ms"]
