"""Pydantic v2 models of the six ``telemetry.contest.*`` events (see the wire contract).

Field names are camelCase on the wire (aliases) and snake_case in Python. Unknown fields are
kept (``extra="allow"``) because moderation may need them, and :meth:`ContestEventBase.to_wire`
returns exactly the fields that were sent. Numbers are checked the way hub code (JavaScript)
means them: booleans and numeric strings are not numbers.
"""

from __future__ import annotations

import enum
import math
import typing
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainValidator
from pydantic.alias_generators import to_camel

from contest_telemetry.schema.contract import (
    EVENT_MESSAGES,
    FINAL_MESSAGES,
    MAX_MILLIS,
    MIN_EVENT_TIME_MS,
    iso_time_ms,
    short_type,
)

__all__ = [
    "EVENT_MESSAGES",
    "EVENT_MODELS",
    "FINAL_MESSAGES",
    "MAX_COUNT",
    "MAX_MILLIS",
    "MIN_EVENT_TIME_MS",
    "AnyContestEvent",
    "ContestArmed",
    "ContestEventBase",
    "ContestExpired",
    "ContestLaunched",
    "ContestResolved",
    "ContestWorkflowFailed",
    "ContestWorkflowStarted",
    "FieldRule",
    "iso_time_ms",
    "short_type",
]

# Bounds on numbers and times (every value the pipeline computes with stays representable: in a
# datetime, in a 64-bit JSON integer, in a sketch). A value beyond them is a validation error.
# MAX_MILLIS and MIN_EVENT_TIME_MS (times) are the contract's (contract.py).
MAX_COUNT = 1_000_000
"""Largest participant count, capacity, complication count or schema version."""


def _non_negative_number(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, got {type(value).__name__}")
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise ValueError("must be a finite number")
    if value < 0:
        raise ValueError(f"must be >= 0, got {value}")
    if value > MAX_MILLIS:
        raise ValueError(f"must be <= {MAX_MILLIS}, got {value}")
    return value


def _non_negative_int(value: Any) -> int:
    number = _non_negative_number(value)
    if isinstance(number, float):
        if not number.is_integer():
            raise ValueError(f"must be a whole number, got {number}")
        number = int(number)
    if number > MAX_COUNT:
        raise ValueError(f"must be <= {MAX_COUNT}, got {number}")
    return number


def _non_empty_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError("must not be empty")
    return value


def _iso_timestamp(value: str) -> str:
    iso_time_ms(value)
    return value


class FieldRule(enum.Enum):
    """The rule a field's type enforces beyond its Python type, stated as ``Annotated`` metadata
    beside the validator that enforces it (pydantic ignores the marker).

    The fast paths that check events without pydantic (:mod:`contest_telemetry.schema.fastpath`)
    read these markers, never the validators: a type carrying one must enforce exactly its rule,
    and a rule added any other way (a ``field_validator``, a constraint without a marker) must
    come with a marker of its own, or the fast paths refuse the model."""

    ID = "id"
    """A non-empty str."""
    MILLIS = "millis"
    """An int or a finite float, 0 to MAX_MILLIS (a bool is not a number)."""
    COUNT = "count"
    """An int 0 to MAX_COUNT, or a whole float in that range, which becomes an int."""
    LEVEL = "level"
    """One of the values of its ``Literal``."""
    TIMESTAMP = "timestamp"
    """A str :func:`iso_time_ms` takes."""


Millis = Annotated[int | float, PlainValidator(_non_negative_number), FieldRule.MILLIS]
"""Epoch milliseconds or a duration in milliseconds: a finite number >= 0."""
Count = Annotated[int, PlainValidator(_non_negative_int), FieldRule.COUNT]
Id = Annotated[str, PlainValidator(_non_empty_str), FieldRule.ID]
Level = Annotated[Literal["info", "error"], FieldRule.LEVEL]
Timestamp = Annotated[str, AfterValidator(_iso_timestamp), FieldRule.TIMESTAMP]
"""An ISO-8601 date-time (naive times are UTC) within years 1-9999 UTC."""


class ContestEventBase(BaseModel):
    """Fields every contest event may carry."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        strict=True,
        frozen=False,
    )

    message: str
    timestamp: Timestamp | None = None
    level: Level = "info"
    hub_id: Id
    room_id: str | None = None
    contest_key: Id
    # Added by this project (never required: hubs that predate them stay valid).
    event_id: str | None = None
    schema_version: Count | None = None
    # Raw lifecycle times, where a producer has them.
    created_at: Millis | None = None
    started_at: Millis | None = None
    resolved_at: Millis | None = None
    expires_at: Millis | None = None
    expired_at: Millis | None = None

    FINAL: ClassVar[bool] = False

    def to_wire(self) -> dict[str, Any]:
        """The event as JSON-ready dict: camelCase, exactly the fields that were set."""
        return self.model_dump(by_alias=True, exclude_unset=True)

    def event_time_ms(self) -> float | None:
        """Epoch ms of ``timestamp`` (naive times are UTC), or None when absent."""
        return None if self.timestamp is None else iso_time_ms(self.timestamp)


class _Tagged(BaseModel):
    moderation_tags: list[str] | None = None
    shared_complication_tags: list[str] | None = None


class _Descriptive(BaseModel):
    label: str | None = None
    move: str | None = None
    type: str | None = None


class ContestArmed(ContestEventBase, _Descriptive, _Tagged):
    message: Literal["telemetry.contest.armed"]
    participant_count: Count = 1
    participant_capacity: Count | None = None
    window_ms: Millis | None = None


class ContestLaunched(ContestEventBase, _Descriptive, _Tagged):
    message: Literal["telemetry.contest.launched"]
    contest_id: Id
    participant_count: Count | None = None
    participant_capacity: Count | None = None
    arming_duration_ms: Millis | None = None


class ContestWorkflowStarted(ContestEventBase):
    message: Literal["telemetry.contest.workflowStarted"]
    contest_id: Id
    workflow_id: str | None = None
    run_id: str | None = None


class ContestWorkflowFailed(ContestEventBase):
    message: Literal["telemetry.contest.workflowFailed"]
    level: Level = "error"
    contest_id: Id
    error: str = "workflow_failed"

    FINAL: ClassVar[bool] = True


class ContestResolved(ContestEventBase, _Tagged):
    message: Literal["telemetry.contest.resolved"]
    contest_id: Id
    participant_count: Count | None = None
    participant_capacity: Count | None = None
    outcome_tier: str | int | None = None
    shared_complication_count: Count = 0
    arming_duration_ms: Millis | None = None
    resolution_duration_ms: Millis | None = None

    FINAL: ClassVar[bool] = True


class ContestExpired(ContestEventBase, _Descriptive):
    message: Literal["telemetry.contest.expired"]
    participant_count: Count | None = None
    participant_capacity: Count | None = None
    window_ms: Millis | None = None
    arming_duration_ms: Millis | None = None

    FINAL: ClassVar[bool] = True


AnyContestEvent = Annotated[
    ContestArmed
    | ContestLaunched
    | ContestWorkflowStarted
    | ContestWorkflowFailed
    | ContestResolved
    | ContestExpired,
    Field(discriminator="message"),
]

EVENT_MODELS: dict[str, type[ContestEventBase]] = {
    typing.get_args(cls.model_fields["message"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(AnyContestEvent)[0])
}
"""The model of each event, by its ``message``."""
