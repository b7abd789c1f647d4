"""The wire contract: event models, duration rules and the record codec."""

from __future__ import annotations

from contest_telemetry.schema.codec import (
    ENVELOPE_MESSAGE,
    DecodedRecord,
    InvalidEvent,
    decode_event,
    decode_record,
    encode,
    encode_envelope,
    validate_event,
)
from contest_telemetry.schema.durations import arming_duration_ms, as_ms, resolution_durations
from contest_telemetry.schema.events import (
    EVENT_MESSAGES,
    FINAL_MESSAGES,
    AnyContestEvent,
    ContestArmed,
    ContestEventBase,
    ContestExpired,
    ContestLaunched,
    ContestResolved,
    ContestWorkflowFailed,
    ContestWorkflowStarted,
    short_type,
)
from contest_telemetry.schema.exceptions import (
    EventDecodeError,
    EventTimeError,
    EventValidationError,
    FieldError,
    SchemaError,
)

__all__ = [
    "ENVELOPE_MESSAGE",
    "EVENT_MESSAGES",
    "FINAL_MESSAGES",
    "AnyContestEvent",
    "ContestArmed",
    "ContestEventBase",
    "ContestExpired",
    "ContestLaunched",
    "ContestResolved",
    "ContestWorkflowFailed",
    "ContestWorkflowStarted",
    "DecodedRecord",
    "EventDecodeError",
    "EventTimeError",
    "EventValidationError",
    "FieldError",
    "InvalidEvent",
    "SchemaError",
    "arming_duration_ms",
    "as_ms",
    "decode_event",
    "decode_record",
    "encode",
    "encode_envelope",
    "resolution_durations",
    "short_type",
    "validate_event",
]
