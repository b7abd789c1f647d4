"""The wire contract: message names, budgets and event times, event models, duration rules and the
record codec."""

from __future__ import annotations

from contest_telemetry.schema import contract
from contest_telemetry.schema.codec import (
    DecodedRecord,
    InvalidEvent,
    decode_event,
    decode_record,
    encode,
    encode_envelope,
    validate_event,
)
from contest_telemetry.schema.contract import *  # noqa: F403  (re-exported: contract.__all__)
from contest_telemetry.schema.durations import arming_duration_ms, as_ms, resolution_durations
from contest_telemetry.schema.events import (
    EVENT_MODELS,
    AnyContestEvent,
    ContestArmed,
    ContestEventBase,
    ContestExpired,
    ContestLaunched,
    ContestResolved,
    ContestWorkflowFailed,
    ContestWorkflowStarted,
)
from contest_telemetry.schema.exceptions import (
    EventDecodeError,
    EventTimeError,
    EventValidationError,
    FieldError,
    SchemaError,
)

__all__ = [
    *contract.__all__,
    "EVENT_MODELS",
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
    "validate_event",
]
