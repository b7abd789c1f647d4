"""Errors raised while decoding and validating contest events."""

from __future__ import annotations

from dataclasses import dataclass

from contest_telemetry.exceptions import ContestTelemetryError

__all__ = ["EventDecodeError", "EventTimeError", "EventValidationError", "FieldError", "SchemaError"]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field: ``field`` is a dotted camelCase path (``events.3.hubId``)."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


class SchemaError(ContestTelemetryError):
    """Root of the schema stage's errors; ``reason`` is a stable, short category for metrics."""

    reason: str = "schema"

    def __init__(self, message: str, errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.errors: list[FieldError] = errors or []


class EventDecodeError(SchemaError):
    """The bytes are not a JSON object (junk bytes, bad UTF-8, an array, ...)."""

    reason = "decode"


class EventValidationError(SchemaError):
    """The JSON object is not a valid contest event; ``errors`` says which field and why."""

    reason = "validation"


class EventTimeError(SchemaError):
    """A valid event whose time is too far from its Kafka record's timestamp (a clock far ahead
    would move the watermark and make every other hub's events late)."""

    reason = "event_time"
