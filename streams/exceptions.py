"""Errors of the stream processor."""

from __future__ import annotations

from contest_telemetry.exceptions import ConfigError, ContestTelemetryError
from contest_telemetry.schema.exceptions import SchemaError

__all__ = [
    "ApplyError",
    "HubLimitError",
    "ProcessingError",
    "RereadError",
    "SketchError",
    "StateError",
    "StreamsConfigError",
    "StreamsError",
]


class StreamsError(ContestTelemetryError):
    """Root of the stream processor's errors."""


class StreamsConfigError(StreamsError, ConfigError):
    """Worker settings that cannot work (window sizes, topics, ...)."""


class SketchError(StreamsError):
    """Sketches that cannot be merged (different accuracy) or a malformed serialised sketch."""


class StateError(StreamsError):
    """A table value that cannot be decoded (written by an incompatible version)."""


class RereadError(StreamsError):
    """Records the state has not applied could not be read again (the broker stopped answering)."""

    def __init__(self, topic: str, partition: int, first: int, stop: int, position: int) -> None:
        self.topic = topic
        self.partition = partition
        self.first = first
        self.stop = stop
        self.position = position
        super().__init__(
            f"could not re-read {topic}[{partition}] offsets {first}..{stop - 1}: "
            f"no progress past offset {position}"
        )


class HubLimitError(SchemaError):
    """An event of a hub the worker has no room for (``CT_WORKER_MAX_HUBS``): a fleet larger than
    the setting, or hub ids made up by a broken or hostile sender, would otherwise grow the state
    until the worker runs out of memory, and again at each restart."""

    reason = "hub_limit"


class ProcessingError(SchemaError):
    """A record that could not be processed: a record on the ingest stage's internal topic that
    is not what the stage writes, or any unexpected exception while handling one record (the
    last-resort guard: the record is dead-lettered with the exception's text, never retried in a
    loop)."""

    reason = "processing"


class ApplyError(StreamsError):
    """A record could not be applied (outputs or state) after retries, or an output sent earlier
    was not stored: the worker stops rather than commit past it."""
