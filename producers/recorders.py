"""The events the ``record_*`` methods build, named by schema field.

Each :class:`EventShape` lists its event's fields by their Python names, in the order hubs log
them; the wire (camelCase) names come from the schema model's aliases, so they are written
nowhere else, and a name the model does not have fails at import. ``message`` and ``level`` are
the model's, ``schemaVersion`` is the contract's.

A ``record_*`` call passes the values in the shape's order, positionally (this is the caller's
cost, see ``benchmarks/publish.py``); ``tests/producers/test_recorders.py`` checks every argument of
every method lands under its own field. Fields in ``always`` are written even when None (``null``,
as hubs log them), ``optional`` ones only with a value, then the caller's extra fields.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from typing import Any

from contest_telemetry.schema import (
    ARMED,
    EVENT_MODELS,
    EXPIRED,
    LAUNCHED,
    RESOLVED,
    SCHEMA_VERSION,
    WORKFLOW_FAILED,
    WORKFLOW_STARTED,
    ContestEventBase,
)

__all__ = [
    "ARMED_EVENT",
    "EXPIRED_EVENT",
    "LAUNCHED_EVENT",
    "RESOLVED_EVENT",
    "WORKFLOW_FAILED_EVENT",
    "WORKFLOW_STARTED_EVENT",
    "EventShape",
]


def _wire(model: type[ContestEventBase], name: str) -> str:
    info = model.model_fields[name]
    return info.alias or name


class EventShape:
    """The event ``message`` as a ``record_*`` method builds it, fields named as in its model.

    :attr:`event` is ``event(timestamp, extra, *values)`` with ``values`` in the order of
    :attr:`fields`. It is generated from the model (its :attr:`source`, the way dataclasses
    writes ``__init__``) as one dict literal and a test per optional field: the plain code a
    hand-written recorder would be, so a ``record_*`` call costs no more than one.
    """

    __slots__ = ("event", "fields", "message", "model", "source")

    def __init__(self, message: str, always: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
        self.message = message
        self.model = model = EVENT_MODELS[message]
        self.fields = always + optional
        """The Python names of the values :attr:`event` takes, in order."""
        for name in self.fields:
            if name not in model.model_fields or not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"{message} has no field {name!r}")
        items = [
            f"{_wire(model, 'message')!r}: _MESSAGE",
            f"{_wire(model, 'timestamp')!r}: _timestamp",
            f"{_wire(model, 'level')!r}: _LEVEL",
            f"{_wire(model, 'schema_version')!r}: _SCHEMA_VERSION",
            *(f"{_wire(model, name)!r}: {name}" for name in always),
        ]
        lines = [
            f"def event(_timestamp, _extra, {', '.join(self.fields)}):",
            f"    _event = {{{', '.join(items)}}}",
        ]
        for name in optional:
            lines += [f"    if {name} is not None:", f"        _event[{_wire(model, name)!r}] = {name}"]
        lines += ["    if _extra:", "        _event.update(_extra)", "    return _event"]
        self.source = "\n".join(lines)
        namespace: dict[str, Any] = {
            "_MESSAGE": message,
            "_LEVEL": model.model_fields["level"].default,
            "_SCHEMA_VERSION": SCHEMA_VERSION,
        }
        exec(compile(self.source, f"<{message} recorder>", "exec"), namespace)
        self.event: Callable[..., dict[str, Any]] = namespace["event"]


# Groups of fields, in the order hubs log them.
_WHERE = ("hub_id", "room_id", "contest_key")
_PARTICIPANTS = ("participant_count", "participant_capacity")
_DESCRIPTION = ("label", "move", "type")
_TAGS = ("moderation_tags", "shared_complication_tags")

ARMED_EVENT = EventShape(
    ARMED, (*_WHERE, *_PARTICIPANTS, "window_ms", *_DESCRIPTION), ("created_at", "expires_at", *_TAGS)
)
LAUNCHED_EVENT = EventShape(
    LAUNCHED,
    (*_WHERE, "contest_id", *_PARTICIPANTS, "arming_duration_ms", *_DESCRIPTION),
    ("created_at", "started_at", *_TAGS),
)
WORKFLOW_STARTED_EVENT = EventShape(WORKFLOW_STARTED, (*_WHERE, "contest_id", "workflow_id", "run_id"))
WORKFLOW_FAILED_EVENT = EventShape(WORKFLOW_FAILED, (*_WHERE, "contest_id", "error"))
RESOLVED_EVENT = EventShape(
    RESOLVED,
    (
        *_WHERE,
        "contest_id",
        *_PARTICIPANTS,
        "outcome_tier",
        "shared_complication_count",
        "arming_duration_ms",
        "resolution_duration_ms",
    ),
    ("created_at", "started_at", "resolved_at", *_TAGS),
)
EXPIRED_EVENT = EventShape(
    EXPIRED,
    (*_WHERE, *_PARTICIPANTS, *_DESCRIPTION, "expired_at", "window_ms", "arming_duration_ms"),
    ("created_at", "expires_at"),
)
