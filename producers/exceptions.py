"""Errors of the producer stage."""

from __future__ import annotations

from contest_telemetry.exceptions import ContestTelemetryError

__all__ = ["PublisherClosedError", "PublisherError"]


class PublisherError(ContestTelemetryError):
    """Root of the publisher's errors."""


class PublisherClosedError(PublisherError):
    """An event was recorded after ``close()`` (or before ``start()``)."""
