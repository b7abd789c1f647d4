"""Errors of the stream processor."""

from __future__ import annotations

from contest_telemetry.exceptions import ConfigError, ContestTelemetryError

__all__ = ["SketchError", "StateError", "StreamsConfigError", "StreamsError"]


class StreamsError(ContestTelemetryError):
    """Root of the stream processor's errors."""


class StreamsConfigError(StreamsError, ConfigError):
    """Worker settings that cannot work (window sizes, topics, ...)."""


class SketchError(StreamsError):
    """Sketches that cannot be merged (different accuracy) or a malformed serialised sketch."""


class StateError(StreamsError):
    """A table value that cannot be decoded (written by an incompatible version)."""
