"""Bytes <-> events: single contract events and the batched envelope this project adds.

A Kafka record on ``contest.events`` holds either one contract event (what hubs send today) or an
envelope of several events of one hub::

    {"message": "telemetry.contest.batch", "schemaVersion": 1, "hubId": "hub-1",
     "events": [{...}, {...}], "publisherDropped": 0}

Envelopes amortise per-record costs in the broker and the stream processor. Each event inside an
envelope is validated on its own, so one bad event is reported (with its index) without losing
the good ones beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from contest_telemetry.schema.contract import ENVELOPE_MESSAGE, PREFIX, SCHEMA_VERSION, envelope_of
from contest_telemetry.schema.events import AnyContestEvent, ContestEventBase
from contest_telemetry.schema.exceptions import (
    EventDecodeError,
    EventValidationError,
    FieldError,
    SchemaError,
)

__all__ = [
    "ENVELOPE_MESSAGE",
    "DecodedRecord",
    "InvalidEvent",
    "decode_event",
    "decode_record",
    "encode",
    "encode_envelope",
    "validate_event",
]

_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyContestEvent)


def _field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = [str(part) for part in err["loc"]]
        # Drop the discriminator's own entry (the message literal) from the path.
        if loc and loc[0].startswith(PREFIX):
            loc = loc[1:]
        path = ".".join(loc)
        if err["type"] == "union_tag_invalid":
            path, reason = "message", f"unknown event {err['input'].get('message')!r}"
        elif err["type"] == "union_tag_not_found":
            path, reason = "message", f"missing: every event names a {PREFIX}* message"
        elif err["type"] == "missing":
            reason = "missing"
        else:
            reason = err["msg"].removeprefix("Value error, ")
        out.append(FieldError(f"{prefix}{path}" if path else prefix.rstrip("."), reason))
    return out


def validate_event(obj: Any, *, where: str = "") -> ContestEventBase:
    """Validate one decoded JSON object; raise :class:`EventValidationError` naming the fields."""
    if not isinstance(obj, dict):
        raise EventValidationError(
            f"{where}event must be a JSON object, got {type(obj).__name__}",
            [FieldError(where.rstrip("."), "not an object")],
        )
    try:
        event: ContestEventBase = _ADAPTER.validate_python(obj)
    except ValidationError as exc:
        errors = _field_errors(exc, where)
        name = obj.get("message") if isinstance(obj.get("message"), str) else "event"
        raise EventValidationError(f"{name}: " + "; ".join(map(str, errors)), errors) from None
    return event


def _loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}", [FieldError("", f"not JSON: {exc}")]) from None


def decode_event(data: bytes | str) -> ContestEventBase:
    """Decode and validate one contract event."""
    return validate_event(_loads(data))


@dataclass(slots=True)
class InvalidEvent:
    """One event that failed, with the JSON it came as (None when the record was not JSON)."""

    error: SchemaError
    index: int | None = None
    raw: Any = None


@dataclass(slots=True)
class DecodedRecord:
    """What one Kafka record held."""

    events: list[ContestEventBase] = field(default_factory=list)
    invalid: list[InvalidEvent] = field(default_factory=list)
    envelope: bool = False
    publisher_dropped: int = 0


def decode_record(data: bytes | str | None) -> DecodedRecord:
    """Decode a record that holds one event or an envelope; never raises for bad input."""
    out = DecodedRecord()
    if data is None:
        out.invalid.append(InvalidEvent(EventDecodeError("empty record value", [FieldError("", "empty")])))
        return out
    try:
        obj = _loads(data)
    except EventDecodeError as exc:
        out.invalid.append(InvalidEvent(exc))
        return out
    envelope = envelope_of(obj)
    if envelope is not None:
        out.envelope = True
        if envelope.events is None:
            err = EventValidationError(
                f"{ENVELOPE_MESSAGE}: events: must be a list", [FieldError("events", "must be a list")]
            )
            out.invalid.append(InvalidEvent(err, raw=obj))
            return out
        out.publisher_dropped = envelope.publisher_dropped
        for index, item in enumerate(envelope.events):
            try:
                out.events.append(validate_event(item, where=f"events.{index}."))
            except EventValidationError as exc:
                out.invalid.append(InvalidEvent(exc, index=index, raw=item))
        return out
    try:
        out.events.append(validate_event(obj))
    except EventValidationError as exc:
        out.invalid.append(InvalidEvent(exc, raw=obj))
    return out


def encode(event: dict[str, Any] | ContestEventBase) -> bytes:
    """One event as compact JSON bytes."""
    payload = event.to_wire() if isinstance(event, ContestEventBase) else event
    return orjson.dumps(payload)


def encode_envelope(hub_id: str, events: list[dict[str, Any]], publisher_dropped: int = 0) -> bytes:
    """Several events of one hub as one envelope record."""
    envelope: dict[str, Any] = {
        "message": ENVELOPE_MESSAGE,
        "schemaVersion": SCHEMA_VERSION,
        "hubId": hub_id,
        "events": events,
    }
    if publisher_dropped:
        envelope["publisherDropped"] = publisher_dropped
    return orjson.dumps(envelope)
