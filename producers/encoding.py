"""Check and encode one event when it is recorded, and pack already-encoded events into envelopes.

The publisher refuses an event the pipeline would not take at the call that records it (an
:class:`~producers.exceptions.InvalidEventError` naming the field and why) and buffers its JSON
bytes, so the sender never encodes: one bad event can no longer fail the envelope it would have
shared with 499 good ones.

What is checked is what the ingest stage checks: the schema's rules
(:func:`contest_telemetry.schema.validate_event`), that JSON can hold every value (``orjson``: no
int beyond 64 bits, no set, no non-str key, no invalid UTF-8), that the event fits in one record,
and its ``timestamp`` against the pipeline's event-time bounds (``CT_EVENT_TIME_*``, relative to now:
its record's timestamp is taken when it is sent, a moment later). NaN or infinity where the schema
has no rule (an extra field) is written as ``null``, as orjson does.

The schema's pydantic validation costs several microseconds per event, more than the rest of a
``record_*`` call. :func:`quick_check` accepts the events the ``record_*`` methods build (known
fields of plain types within bounds) with a few type checks by the schema's rules
(:mod:`contest_telemetry.schema.fastpath`, which the stream decoder uses too); anything it is not
sure about (an extra field, a float count, an unknown message, a model without rules, every event
when ``CT_FAST_PATH_ENABLED=false``, ...) is validated by the schema itself, which also words
every error.
It only ever *accepts*; ``tests/producers/test_encoding.py`` checks it never accepts what the
schema refuses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

from contest_telemetry.schema import (
    ENVELOPE_MESSAGE,
    MAX_MILLIS,
    SCHEMA_VERSION,
    EventValidationError,
    FieldError,
    iso_time_ms,
    validate_event,
)
from contest_telemetry.schema import events as _events
from contest_telemetry.schema.fastpath import FAST_RULES, EventRules, Kind
from producers.exceptions import InvalidEventError

__all__ = [
    "ENVELOPE_OVERHEAD",
    "EventEncoder",
    "envelope_header",
    "envelope_size",
    "pack_envelope",
    "quick_check",
]

# -- the quick check -----------------------------------------------------------------------------
_MAX_MILLIS = MAX_MILLIS
_MAX_COUNT = _events.MAX_COUNT
_iso_time_ms = iso_time_ms

# The check group of each (kind, nullable) the quick check knows; a model with any other field
# always goes to the schema.
_GROUPS: dict[tuple[Kind, bool], str] = {
    (Kind.MESSAGE, False): "message",
    (Kind.ID, False): "ids",
    (Kind.TEXT, False): "strs",
    (Kind.TEXT, True): "opt_strs",
    (Kind.MILLIS, True): "millis",
    (Kind.COUNT, False): "counts",
    (Kind.COUNT, True): "opt_counts",
    (Kind.TAGS, True): "lists",
    (Kind.TIER, True): "str_ints",
    (Kind.LEVEL, False): "level",
    (Kind.TIMESTAMP, True): "timestamp",
}


def _table(rules: EventRules) -> dict[str, str] | None:
    """Wire name -> check group of one model; None when a field has no group."""
    table: dict[str, str] = {}
    for key, kind in rules.kinds.items():
        group = _GROUPS.get(kind)
        if group is None:
            return None
        table[key] = group
    return table


_TABLES: dict[str, tuple[EventRules, dict[str, str]]] = {}
for _message, _rules in FAST_RULES.items():
    _t = _table(_rules)
    if _t is not None:
        _TABLES[_message] = (_rules, _t)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The keys of one shape of event (message and field names, in order) grouped by check."""

    ids: tuple[str, ...]
    strs: tuple[str, ...]
    opt_strs: tuple[str, ...]
    millis: tuple[str, ...]
    counts: tuple[str, ...]
    opt_counts: tuple[str, ...]
    lists: tuple[str, ...]
    str_ints: tuple[str, ...]
    level: bool
    timestamp: bool
    levels: tuple[str, ...]


def _compile(message: str, keys: tuple[str, ...]) -> _Plan | None:
    table = _TABLES.get(message)
    if table is None:
        return None
    rules, groups_of = table
    if not rules.required.issubset(keys):
        return None
    groups: dict[str, list[str]] = {group: [] for group in _GROUPS.values()}
    for key in keys:
        group = groups_of.get(key)
        if group is None:  # an extra field (or a Python name): the schema decides
            return None
        groups[group].append(key)
    return _Plan(
        ids=tuple(groups["ids"]),
        strs=tuple(groups["strs"]),
        opt_strs=tuple(groups["opt_strs"]),
        millis=tuple(groups["millis"]),
        counts=tuple(groups["counts"]),
        opt_counts=tuple(groups["opt_counts"]),
        lists=tuple(groups["lists"]),
        str_ints=tuple(groups["str_ints"]),
        level=bool(groups["level"]),
        timestamp=bool(groups["timestamp"]),
        levels=rules.levels,
    )


_PLANS: dict[tuple[str, tuple[str, ...]], _Plan | None] = {}
_MAX_PLANS = 4096
"""Shapes (message, keys) remembered; as in streams/fastdecode.py only those of a known message
with no more keys than its fields, so made-up messages and keys cannot fill it with large tuples."""


def quick_check(
    obj: dict[str, Any], stamp: tuple[str | None, float] = (None, 0.0)
) -> tuple[bool, float | None]:
    """``(True, event time ms or None)`` when ``obj`` is certainly a valid event by the schema's
    rules; ``(False, None)`` when not sure (then ask :func:`~contest_telemetry.schema.validate_event`).

    ``stamp``: a ``timestamp`` text known to be valid (the very object, compared by identity) and
    its epoch ms, which then needs no parsing.
    """
    message = obj.get("message")
    if type(message) is not str:
        return False, None
    shape = (message, tuple(obj))
    try:
        plan = _PLANS[shape]
    except KeyError:
        table = _TABLES.get(message)
        if table is None or len(shape[1]) > len(table[1]):
            return False, None  # an unknown message or extra fields: the schema decides
        plan = _compile(message, shape[1]) if all(type(k) is str for k in shape[1]) else None
        if len(_PLANS) < _MAX_PLANS:
            _PLANS[shape] = plan
    except TypeError:  # a key that cannot be hashed in a tuple
        return False, None
    if plan is None:
        return False, None
    for key in plan.opt_strs:
        value = obj[key]
        if value is not None and type(value) is not str:
            return False, None
    for key in plan.ids:
        value = obj[key]
        if type(value) is not str or not value:
            return False, None
    for key in plan.millis:
        value = obj[key]
        if value is not None:
            t = type(value)
            if (t is not int and t is not float) or not 0 <= value <= _MAX_MILLIS:
                return False, None  # NaN fails the comparison too
    for key in plan.opt_counts:
        value = obj[key]
        if value is not None and (type(value) is not int or not 0 <= value <= _MAX_COUNT):
            return False, None
    for key in plan.counts:
        value = obj[key]
        if type(value) is not int or not 0 <= value <= _MAX_COUNT:
            return False, None
    for key in plan.strs:
        if type(obj[key]) is not str:
            return False, None
    for key in plan.lists:
        value = obj[key]
        if value is not None:
            if type(value) is not list:
                return False, None
            for item in value:
                if type(item) is not str:
                    return False, None
    for key in plan.str_ints:
        value = obj[key]
        if value is not None and type(value) is not str and type(value) is not int:
            return False, None
    if plan.level:
        level = obj["level"]
        if type(level) is not str or level not in plan.levels:
            return False, None
    t_ms: float | None = None
    if plan.timestamp:
        timestamp = obj["timestamp"]
        if timestamp is None:
            pass
        elif timestamp is stamp[0]:
            t_ms = stamp[1]
        else:
            if type(timestamp) is not str:
                return False, None
            try:
                t_ms = _iso_time_ms(timestamp)
            except ValueError:
                return False, None
    return True, t_ms


# -- errors that name the field ------------------------------------------------------------------
def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _unencodable(value: Any, path: str = "", depth: int = 0) -> FieldError:
    """The first value under ``value`` that orjson cannot encode, as a FieldError (error path only)."""
    try:
        orjson.dumps(value)
        reason = "cannot be encoded as JSON"
    except orjson.JSONEncodeError as exc:
        reason = f"cannot be encoded as JSON: {exc}"
    if depth < 64:
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    return FieldError(
                        _join(path, repr(key)), f"keys must be strings, got {type(key).__name__}"
                    )
            for key, item in value.items():
                try:
                    orjson.dumps(item)
                except orjson.JSONEncodeError:
                    return _unencodable(item, _join(path, key), depth + 1)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                try:
                    orjson.dumps(item)
                except orjson.JSONEncodeError:
                    return _unencodable(item, _join(path, str(index)), depth + 1)
    return FieldError(path, reason)


def _name(obj: Any) -> str:
    message = obj.get("message") if isinstance(obj, dict) else None
    return message if isinstance(message, str) and message else "event"


# -- envelopes -----------------------------------------------------------------------------------
ENVELOPE_OVERHEAD = len(b',"events":[]') + len(b',"publisherDropped":') + 20 + len(b"}")
"""Bytes of an envelope beyond its header and events, whatever its dropped count."""
_HEADER = len(b'{"message":"%s","schemaVersion":%d,"hubId":' % (ENVELOPE_MESSAGE.encode(), SCHEMA_VERSION))
"""Bytes of an envelope's header before its hubId."""


def envelope_header(hub_id: str) -> bytes:
    """The bytes of an envelope before its first event (the key order of ``encode_envelope``)."""
    return b'{"message":%s,"schemaVersion":%d,"hubId":%s' % (
        orjson.dumps(ENVELOPE_MESSAGE),
        SCHEMA_VERSION,
        orjson.dumps(hub_id),
    )


def pack_envelope(header: bytes, events: list[bytes], publisher_dropped: int = 0) -> bytes:
    """One envelope record of already-encoded events, byte for byte what
    :func:`contest_telemetry.schema.encode_envelope` gives for the same events."""
    tail = b',"publisherDropped":%d}' % publisher_dropped if publisher_dropped else b"}"
    return b"".join((header, b',"events":[', b",".join(events), b"]", tail))


def envelope_size(header: bytes, events_bytes: int, count: int) -> int:
    """Most bytes an envelope of ``count`` events totalling ``events_bytes`` takes."""
    return len(header) + events_bytes + max(count - 1, 0) + ENVELOPE_OVERHEAD


# -- the encoder ---------------------------------------------------------------------------------
class EventEncoder:
    """Check one event as the pipeline will and return its JSON bytes, or raise
    :class:`InvalidEventError` (reason, field, why).

    ``max_bytes``: the largest record value (an event must fit in an envelope of its own);
    ``max_future_ms`` / ``max_past_ms``: how far ``timestamp`` may be ahead of / behind now
    (None: no bound), the pipeline's ``CT_EVENT_TIME_*``.
    """

    def __init__(
        self,
        max_bytes: int,
        max_future_ms: float | None = None,
        max_past_ms: float | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_future_ms = max_future_ms
        self.max_past_ms = max_past_ms
        self.stamp: tuple[str | None, float] = (None, 0.0)
        """The last ``timestamp`` the publisher made and its epoch ms (see :func:`quick_check`)."""
        # The envelope's header repeats hubId, which the event holds too: an event of at most
        # this many bytes fits whatever its hubId; only larger ones are measured exactly.
        self._surely_fits = (max_bytes - _HEADER - ENVELOPE_OVERHEAD) // 2
        self._future = math.inf if max_future_ms is None else max_future_ms
        self._past = math.inf if max_past_ms is None else max_past_ms
        self._timed = max_future_ms is not None or max_past_ms is not None

    def encode(self, obj: dict[str, Any]) -> tuple[str, bytes]:
        """``(hubId, the event's JSON bytes)``; :class:`InvalidEventError` when the pipeline would
        not take the event."""
        if not isinstance(obj, dict):
            raise InvalidEventError(
                f"an event must be a dict, got {type(obj).__name__}", [FieldError("", "not an object")]
            )
        ok, t_ms = quick_check(obj, self.stamp)
        if ok:
            hub: str = obj["hubId"]
        else:
            hub, t_ms = self._validate(obj)
        try:
            data = orjson.dumps(obj)
        except orjson.JSONEncodeError:
            error = _unencodable(obj)
            raise InvalidEventError(f"{_name(obj)}: {error}", [error], "encode") from None
        if len(data) > self._surely_fits:
            self._check_size(obj, hub, data)
        if t_ms is not None and self._timed:
            ahead = t_ms - time.time() * 1000.0
            if ahead > self._future or -ahead > self._past:
                self._time_error(obj, ahead)
        return hub, data

    @staticmethod
    def _validate(obj: dict[str, Any]) -> tuple[str, float | None]:
        """The schema's validation (strict: JSON only ever loosens a type, a tuple to a list, so
        what passes here passes the ingest stage's validation of the JSON): hubId (also when given
        by its Python name) and the event time."""
        try:
            event = validate_event(obj)
        except EventValidationError as exc:
            raise InvalidEventError(str(exc), exc.errors) from None
        return event.hub_id, event.event_time_ms()

    def _check_size(self, obj: dict[str, Any], hub: str, data: bytes) -> None:
        if envelope_size(envelope_header(hub), len(data), 1) > self.max_bytes:
            error = FieldError(
                "",
                f"{len(data)} bytes as JSON: more than one record may hold "
                f"(CT_PUBLISHER_MAX_RECORD_BYTES={self.max_bytes}, envelope included)",
            )
            raise InvalidEventError(f"{_name(obj)}: {error}", [error], "size")

    def _time_error(self, obj: dict[str, Any], ahead: float) -> None:
        if ahead > 0:
            limit, name = self._future, "CT_EVENT_TIME_MAX_FUTURE_S"
        else:
            limit, name = self._past, "CT_EVENT_TIME_MAX_PAST_S"
        error = FieldError(
            "timestamp",
            f"{ahead / 1000.0:+.0f} s from now, beyond {name}={limit / 1000.0:g}: the pipeline would "
            "dead-letter it",
        )
        raise InvalidEventError(f"{_name(obj)}: {error}", [error], "event_time")
