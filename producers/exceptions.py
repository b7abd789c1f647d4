"""Errors of the producer stage."""

from __future__ import annotations

from contest_telemetry.exceptions import ContestTelemetryError
from contest_telemetry.schema import FieldError

__all__ = ["InvalidEventError", "PublisherClosedError", "PublisherError"]


class PublisherError(ContestTelemetryError):
    """Root of the publisher's errors."""


class PublisherClosedError(PublisherError):
    """An event was recorded after ``close()`` (or before ``start()``)."""


class InvalidEventError(PublisherError, ValueError):
    """An event that the pipeline would not take, refused when it is recorded (nothing is buffered).

    ``reason`` is a short category: ``validation`` (the schema's rules, as the ingest stage checks
    them), ``encode`` (a value JSON cannot hold: an int beyond 64 bits, a set, a non-str key, a
    string that is not valid UTF-8, ...), ``size`` (larger than one record may be) or
    ``event_time`` (``timestamp`` too far from now: the pipeline would dead-letter it).
    ``errors`` names each field (dotted camelCase path) and why.
    """

    def __init__(
        self, message: str, errors: list[FieldError] | None = None, reason: str = "validation"
    ) -> None:
        super().__init__(message)
        self.errors: list[FieldError] = errors or []
        self.reason = reason
