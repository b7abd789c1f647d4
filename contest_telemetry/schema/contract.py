"""What the wire contract fixes beyond the event models, in one place.

- message names: the ``telemetry.contest.`` prefix, the six event types (full and short) and the
  envelope this project adds;
- the envelope: what a decoded record value holds when it is one (:func:`envelope_of`);
- event time as text: ISO-8601 to epoch ms (:func:`iso_time_ms`) and back (:func:`ms_to_iso`);
- the budgets the pipeline judges latencies by (DES-BENCH-01).

The event models (``events.py``) spell each message once more, as the ``Literal`` their
discriminated union needs; ``tests/contest_telemetry/test_contract.py`` checks they match
:data:`EVENT_MESSAGES`. Every other module imports these names instead of writing them again.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

__all__ = [
    "ARMED",
    "ARMING_BUDGET_MS",
    "ENVELOPE_MESSAGE",
    "EVENT_MESSAGES",
    "EVENT_TYPES",
    "EXPIRED",
    "FINAL_MESSAGES",
    "LAUNCHED",
    "MAX_MILLIS",
    "MIN_EVENT_TIME_MS",
    "MULTI_ACTOR_OVER",
    "PREFIX",
    "RESOLUTION_BUDGET_MS",
    "RESOLVED",
    "SCHEMA_VERSION",
    "WORKFLOW_FAILED",
    "WORKFLOW_STARTED",
    "Envelope",
    "envelope_of",
    "iso_stamp",
    "iso_time_ms",
    "ms_to_iso",
    "short_type",
]

# -- message names -------------------------------------------------------------------------------
PREFIX = "telemetry.contest."
"""Every contract message starts with this."""
ARMED = PREFIX + "armed"
LAUNCHED = PREFIX + "launched"
WORKFLOW_STARTED = PREFIX + "workflowStarted"
WORKFLOW_FAILED = PREFIX + "workflowFailed"
RESOLVED = PREFIX + "resolved"
EXPIRED = PREFIX + "expired"
EVENT_MESSAGES: tuple[str, ...] = (ARMED, LAUNCHED, WORKFLOW_STARTED, WORKFLOW_FAILED, RESOLVED, EXPIRED)
"""The six events, in lifecycle order."""
FINAL_MESSAGES: frozenset[str] = frozenset((WORKFLOW_FAILED, RESOLVED, EXPIRED))
"""The events that finish a contest."""
ENVELOPE_MESSAGE = PREFIX + "batch"
"""The ``message`` of an envelope: several events of one hub in one record."""
SCHEMA_VERSION = 1
"""The ``schemaVersion`` this project writes on events and envelopes."""


def short_type(message: str) -> str:
    """``telemetry.contest.resolved`` -> ``resolved`` (the ``type`` label of metrics)."""
    return message[len(PREFIX) :] if message.startswith(PREFIX) else message


EVENT_TYPES: tuple[str, ...] = tuple(short_type(message) for message in EVENT_MESSAGES)
"""The six events by short name: ``armed``, ``launched``, ``workflowStarted``, ..."""


# -- the envelope --------------------------------------------------------------------------------
class Envelope(NamedTuple):
    events: list[Any] | None
    """The items of ``events``, not yet validated; None when ``events`` is not a list."""
    publisher_dropped: int
    """``publisherDropped`` when it is a positive whole number, else 0."""


def envelope_of(obj: Any) -> Envelope | None:
    """What a decoded record value holds when it is an envelope; None when it is not one (a single
    event, or anything else for the schema to judge)."""
    if not isinstance(obj, dict) or obj.get("message") != ENVELOPE_MESSAGE:
        return None
    events = obj.get("events")
    dropped = obj.get("publisherDropped", 0)
    return Envelope(
        events if isinstance(events, list) else None,
        dropped if isinstance(dropped, int) and not isinstance(dropped, bool) and dropped > 0 else 0,
    )


# -- event time ----------------------------------------------------------------------------------
MAX_MILLIS = 253_402_300_799_999
"""Largest epoch time or duration in ms: 9999-12-31T23:59:59.999Z."""
MIN_EVENT_TIME_MS = -62_135_596_800_000
"""Earliest ``timestamp``: 0001-01-01T00:00:00Z (``timestamp`` may be before 1970, raw times may not)."""

_fromisoformat = datetime.fromisoformat


def iso_time_ms(value: str, bounded: bool = True) -> float:
    """Epoch ms of an ISO-8601 date-time (naive times are UTC, as hubs log them); ValueError when
    it is not one or, when ``bounded``, falls outside years 1-9999 in UTC (what the schema takes).

    The stream decoder calls this for every event: keep it one call, without helpers.
    """
    try:
        parsed = _fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ms = parsed.timestamp() * 1000.0
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"must be an ISO-8601 date-time, got {value[:64]!r}") from None
    if bounded and not MIN_EVENT_TIME_MS <= ms <= MAX_MILLIS:
        raise ValueError(f"must be in years 1-9999 UTC, got {value[:64]!r}")
    return ms


_second: tuple[int, str] = (0, "1970-01-01T00:00:00")
"""The last whole second formatted: (epoch s, its ISO-8601 text up to the seconds)."""


def iso_stamp(ms: float | None = None) -> tuple[str, float]:
    """:func:`ms_to_iso` and the epoch ms the text shows (``ms`` cut to whole milliseconds)."""
    global _second
    if ms is None:
        sec, us = divmod(time.time_ns() // 1000, 1_000_000)
    else:
        # datetime.fromtimestamp's rounding: microseconds half to even.
        frac, whole = math.modf(ms / 1000.0)
        us = round(frac * 1e6)  # ValueError for NaN
        sec = int(whole)  # OverflowError for inf
        if us >= 1_000_000:
            sec, us = sec + 1, us - 1_000_000
        elif us < 0:
            sec, us = sec - 1, us + 1_000_000
    cached, text = _second
    if sec != cached:
        text = datetime.fromtimestamp(sec, UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        _second = (sec, text)
    millis = us // 1000
    return f"{text}.{millis:03d}Z", sec * 1000.0 + millis


def ms_to_iso(ms: float | None = None) -> str:
    """Epoch ms (None: now) as ISO-8601 UTC with milliseconds and a ``Z``, as the hubs' logger
    writes ``timestamp``.

    The text is ``datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")`` with
    ``Z`` for ``+00:00`` (microseconds rounded half to even, then cut to milliseconds), but the date
    and time of day are formatted once per second: the publisher stamps every event with it.
    ValueError, OverflowError or OSError when ``ms`` is not a finite time in years 1-9999.
    """
    return iso_stamp(ms)[0]


# -- budgets -------------------------------------------------------------------------------------
ARMING_BUDGET_MS = 8000.0
"""Arming latency budget: p95 at most 8,000 ms."""
RESOLUTION_BUDGET_MS = 800.0
"""Resolution latency budget: p95 at most 800 ms."""
MULTI_ACTOR_OVER = 2
"""A finished contest with more participants (or a capacity larger) than this is multi-actor."""
