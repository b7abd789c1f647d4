from __future__ import annotations

import copy

import orjson
import pytest

from contest_telemetry.schema import (
    ContestArmed,
    ContestWorkflowFailed,
    EventDecodeError,
    EventValidationError,
    decode_event,
    decode_record,
    encode,
    encode_envelope,
    validate_event,
)
from tests.contest_telemetry.contract_events import ALL, ARMED, RESOLVED, WORKFLOW_FAILED


@pytest.mark.parametrize("event", ALL, ids=lambda e: e["message"].rsplit(".", 1)[1])
def test_every_contract_event_is_accepted_and_round_trips(event: dict) -> None:
    model = validate_event(copy.deepcopy(event))
    assert model.to_wire() == event
    assert orjson.loads(encode(model)) == event


def test_defaults_from_the_contract() -> None:
    armed = validate_event({"message": "telemetry.contest.armed", "hubId": "h", "contestKey": "k"})
    assert isinstance(armed, ContestArmed) and armed.participant_count == 1
    failed = validate_event(
        {"message": "telemetry.contest.workflowFailed", "hubId": "h", "contestKey": "k", "contestId": "c"}
    )
    assert isinstance(failed, ContestWorkflowFailed)
    assert failed.error == "workflow_failed" and failed.level == "error"
    resolved = validate_event(
        {"message": "telemetry.contest.resolved", "hubId": "h", "contestKey": "k", "contestId": "c"}
    )
    assert resolved.shared_complication_count == 0  # type: ignore[attr-defined]


def test_unknown_fields_are_kept() -> None:
    event = {**RESOLVED, "moderationNote": {"by": "mod-3"}, "newField": 1}
    assert validate_event(event).to_wire() == event


def test_added_fields_are_optional_and_kept() -> None:
    event = {**RESOLVED, "eventId": "e-1", "schemaVersion": 1}
    model = validate_event(event)
    assert model.event_id == "e-1" and model.schema_version == 1
    assert model.to_wire() == event


def test_armed_has_no_contest_id_but_launched_needs_one() -> None:
    launched = {"message": "telemetry.contest.launched", "hubId": "h", "contestKey": "k"}
    with pytest.raises(EventValidationError) as info:
        validate_event(launched)
    assert [(e.field, e.reason) for e in info.value.errors] == [("contestId", "missing")]


@pytest.mark.parametrize(
    ("patch", "field", "reason"),
    [
        ({"resolutionDurationMs": -5}, "resolutionDurationMs", "must be >= 0, got -5"),
        ({"participantCount": "3"}, "participantCount", "must be a number, got str"),
        ({"participantCount": True}, "participantCount", "must be a number, got bool"),
        ({"participantCount": 2.5}, "participantCount", "must be a whole number, got 2.5"),
        ({"armingDurationMs": "240"}, "armingDurationMs", "must be a number, got str"),
        ({"hubId": ""}, "hubId", "must not be empty"),
        ({"hubId": 7}, "hubId", "must be a string, got int"),
        ({"timestamp": "yesterday"}, "timestamp", "must be an ISO-8601 date-time, got 'yesterday'"),
        ({"level": "debug"}, "level", "Input should be 'info' or 'error'"),
    ],
)
def test_bad_values_name_the_field_and_why(patch: dict, field: str, reason: str) -> None:
    with pytest.raises(EventValidationError) as info:
        validate_event({**RESOLVED, **patch})
    assert [(e.field, e.reason) for e in info.value.errors] == [(field, reason)]
    assert str(info.value).startswith("telemetry.contest.resolved: " + field)


def test_missing_message() -> None:
    event = {k: v for k, v in RESOLVED.items() if k != "message"}
    with pytest.raises(EventValidationError) as info:
        validate_event(event)
    assert info.value.errors[0].field == "message"
    assert "missing" in info.value.errors[0].reason


def test_unknown_message() -> None:
    with pytest.raises(EventValidationError, match=r"unknown event 'telemetry\.contest\.paused'"):
        validate_event({**RESOLVED, "message": "telemetry.contest.paused"})


@pytest.mark.parametrize("junk", [b"\xff\xfe\x00junk", b"{not json", b"", b"[1,2]", b"42"])
def test_junk_bytes(junk: bytes) -> None:
    with pytest.raises((EventDecodeError, EventValidationError)):
        decode_event(junk)
    record = decode_record(junk)
    assert record.events == [] and len(record.invalid) == 1
    assert record.invalid[0].error.reason in {"decode", "validation"}


def test_decode_record_single_event() -> None:
    record = decode_record(encode(WORKFLOW_FAILED))
    assert not record.envelope and [e.to_wire() for e in record.events] == [WORKFLOW_FAILED]


def test_envelope_with_one_bad_event_keeps_the_good_ones() -> None:
    bad = {**RESOLVED, "participantCount": -1}
    data = encode_envelope("hub-1", [ARMED, bad, RESOLVED], publisher_dropped=3)
    record = decode_record(data)
    assert record.envelope and record.publisher_dropped == 3
    assert [e.to_wire() for e in record.events] == [ARMED, RESOLVED]
    [invalid] = record.invalid
    assert invalid.index == 1 and invalid.raw == bad
    assert invalid.error.errors[0].field == "events.1.participantCount"


def test_envelope_without_a_list() -> None:
    record = decode_record(b'{"message": "telemetry.contest.batch", "events": 3}')
    assert record.envelope and record.invalid[0].error.errors[0].field == "events"


def test_naive_timestamp_is_utc() -> None:
    model = validate_event({**RESOLVED, "timestamp": "2025-11-04T08:05:00"})
    assert model.event_time_ms() == 1762243500000.0
    assert validate_event({**RESOLVED, "timestamp": None}).event_time_ms() is None
