"""Records of ``contest.events`` -> events as plain dicts, with a fast path for well-formed events.

The worker does not need pydantic model instances: the lifecycle join and the windows read a
handful of fields. :func:`decode_events` returns each valid event *normalised*: a dict with every
field of its event class under its wire (camelCase) name, defaults filled in, extras left out
(what ``{alias: getattr(model, name)}`` of the validated model gives), plus its event time.

Validating each event with pydantic (a discriminated union, plain validators that call back into
Python, an ISO-8601 check) and then reading model attributes was ~40% of the worker's per-event
cost. The fast path checks an event against the same rules by hand. It only ever *accepts*:
whatever it is not sure about (an extra field, a field given by its Python name, a type or value
the schema would reject, a record that is not JSON, a malformed envelope) sends the *whole record*
to :func:`contest_telemetry.schema.decode_record`, so every dead letter (reason, fields, index)
comes from the schema's own code and valid events there are normalised from the models.

The per-class rules come from :mod:`contest_telemetry.schema.fastpath` (the models' ``Annotated``
markers; a model it does not understand is never fast-pathed, and ``CT_FAST_PATH_ENABLED=false``
sends every record to the schema). Per event the checks to run are compiled once per shape
(message, field names, value types) and cached.
``tests/streams/test_fastdecode.py`` checks both paths agree over generated valid and invalid
events (values, their types, field order, event times, dead letters).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from contest_telemetry.schema import (
    ENVELOPE_MESSAGE,
    EVENT_MODELS,
    MAX_MILLIS,
    ContestEventBase,
    InvalidEvent,
    decode_record,
    envelope_of,
    iso_time_ms,
)
from contest_telemetry.schema import events as _events
from contest_telemetry.schema.fastpath import FAST_RULES, TEMPLATES, EventRules, Kind

__all__ = [
    "FAST_MESSAGES",
    "TEMPLATES",
    "Decoded",
    "decode_events",
    "fast_event",
    "normalise",
    "screen_event_times",
]

_NONE = type(None)
# The value types a field of each kind may have as JSON gives them (None aside).
_ALLOWED: dict[Kind, tuple[type, ...]] = {
    Kind.MESSAGE: (str,),
    Kind.ID: (str,),
    Kind.TEXT: (str,),
    Kind.TAGS: (list,),
    Kind.TIER: (str, int),
    Kind.MILLIS: (int, float),
    Kind.COUNT: (int, float),
    Kind.LEVEL: (str,),
    Kind.TIMESTAMP: (str,),
}

_isfinite = math.isfinite
_MAX_MILLIS, _MAX_COUNT = MAX_MILLIS, _events.MAX_COUNT


@dataclass(slots=True)
class Decoded:
    """What one Kafka record held: its valid events (normalised), their event times (None: no
    timestamp) and its invalid events as the schema reports them."""

    events: list[dict[str, Any]] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)
    invalid: list[InvalidEvent] = field(default_factory=list)
    envelope: bool = False
    publisher_dropped: int = 0
    verbatim: bool = False
    """Every event is its source object with :data:`TEMPLATES` filled in: the record's value
    says, to a reader that fills the same defaults (:func:`expand`), exactly what ``events`` do."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """The checks one shape of event needs beyond its value types."""

    template: dict[str, Any]
    nonempty: tuple[str, ...]
    nonneg: tuple[str, ...]
    finite: tuple[str, ...]
    float_counts: tuple[str, ...]
    lists: tuple[str, ...]
    level: bool
    timestamp: bool
    ints: tuple[str, ...] = ()  # int counts: also <= MAX_COUNT
    levels: tuple[str, ...] = ()


def _allowed(rules: EventRules) -> dict[str, tuple[type, ...]]:
    return {
        key: _ALLOWED[kind] + ((_NONE,) if nullable else ()) for key, (kind, nullable) in rules.kinds.items()
    }


_FIELDS: dict[type[ContestEventBase], tuple[tuple[str, str], ...]] = {
    cls: tuple((name, info.alias or name) for name, info in cls.model_fields.items())
    for cls in EVENT_MODELS.values()
}
_SPECS: dict[str, tuple[EventRules, dict[str, tuple[type, ...]]]] = {
    message: (rules, _allowed(rules)) for message, rules in FAST_RULES.items()
}
FAST_MESSAGES: frozenset[str] = frozenset(_SPECS)
"""The event messages the fast path knows (the others always take the schema's path; none when
``CT_FAST_PATH_ENABLED=false``)."""

_PLANS: dict[tuple[str, tuple[str, ...], tuple[type, ...]], _Plan | None] = {}
_MAX_PLANS = 4096
"""Shapes (message, keys, value types) remembered. Only shapes of a known message with no more
keys than its fields are kept, so the cache stays under a few MB whatever hubs send; a shape met
once the cache is full is compiled each time (slower, same result)."""


def _compile(
    spec: tuple[EventRules, dict[str, tuple[type, ...]]], keys: tuple[str, ...], types: tuple[type, ...]
) -> _Plan | None:
    rules, allowed = spec
    if not rules.required.issubset(keys):
        return None
    nonempty: list[str] = []
    nonneg: list[str] = []
    finite: list[str] = []
    float_counts: list[str] = []
    lists: list[str] = []
    ints: list[str] = []
    level = timestamp = False
    for key, t in zip(keys, types, strict=True):
        if t not in allowed.get(key, ()):
            return None  # an extra field, a Python name, a type the schema rejects (or coerces)
        if t is _NONE:
            continue
        kind = rules.kinds[key][0]
        if kind is Kind.ID:
            nonempty.append(key)
        elif kind is Kind.MILLIS:
            nonneg.append(key)
            if t is float:
                finite.append(key)
        elif kind is Kind.COUNT:
            if t is float:
                float_counts.append(key)
            else:
                nonneg.append(key)
                ints.append(key)
        elif kind is Kind.TAGS:
            lists.append(key)
        elif kind is Kind.LEVEL:
            level = True
        elif kind is Kind.TIMESTAMP:
            timestamp = True
    return _Plan(
        rules.template,
        tuple(nonempty),
        tuple(nonneg),
        tuple(finite),
        tuple(float_counts),
        tuple(lists),
        level,
        timestamp,
        tuple(ints),
        rules.levels,
    )


def fast_event(obj: Any) -> tuple[dict[str, Any], float | None, bool] | None:
    """``normalise(validate_event(obj))``, the event time, and whether the event is ``obj`` with
    the defaults filled in (no whole-number float count turned into an int); None when not sure."""
    if type(obj) is not dict:
        return None
    message = obj.get("message")
    if type(message) is not str:
        return None
    sig = (message, tuple(obj), tuple(map(type, obj.values())))
    try:
        plan = _PLANS[sig]
    except KeyError:
        spec = _SPECS.get(message)
        if spec is None or len(sig[1]) > len(spec[1]):
            return None  # an unknown message or extra fields: the schema decides, nothing cached
        plan = _compile(spec, sig[1], sig[2])
        if len(_PLANS) < _MAX_PLANS:
            _PLANS[sig] = plan
    if plan is None:
        return None
    for key in plan.nonempty:
        if not obj[key]:
            return None
    for key in plan.nonneg:
        if obj[key] < 0:
            return None
    for key in plan.finite:
        if not _isfinite(obj[key]):
            return None
    for key in plan.nonneg:
        if obj[key] > _MAX_MILLIS:
            return None
    for key in plan.ints:
        if obj[key] > _MAX_COUNT:
            return None
    if plan.level and obj["level"] not in plan.levels:
        return None
    t_ms: float | None = None
    if plan.timestamp:
        try:
            t_ms = iso_time_ms(obj["timestamp"])
        except ValueError:
            return None
    event = plan.template.copy()
    event.update(obj)
    for key in plan.float_counts:
        v = obj[key]
        if not (_isfinite(v) and 0 <= v <= _MAX_COUNT and v.is_integer()):
            return None
        event[key] = int(v)
    for key in plan.lists:
        items = obj[key]
        for item in items:
            if type(item) is not str:
                return None
        event[key] = list(items)
    return event, t_ms, not plan.float_counts


def normalise(event: ContestEventBase) -> dict[str, Any]:
    """A validated event as the fast path gives it: every field by wire name, no extras."""
    d = event.__dict__
    return {alias: d[name] for name, alias in _FIELDS[type(event)]}


def _slow(data: bytes | str | None) -> Decoded:
    decoded = decode_record(data)
    return Decoded(
        events=[normalise(ev) for ev in decoded.events],
        times=[ev.event_time_ms() for ev in decoded.events],
        invalid=decoded.invalid,
        envelope=decoded.envelope,
        publisher_dropped=decoded.publisher_dropped,
    )


def decode_events(data: bytes | str | None) -> Decoded:
    """What ``decode_record(data)`` reports, with normalised events and their event times."""
    if data is None or not _SPECS:  # no rules: CT_FAST_PATH_ENABLED=false
        return _slow(data)
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _slow(data)
    out = Decoded()
    # envelope_of's own first test, inline: a single-event record pays no call for it.
    is_envelope = type(obj) is dict and obj.get("message") == ENVELOPE_MESSAGE
    envelope = envelope_of(obj) if is_envelope else None
    if envelope is None:
        items = [obj]
    elif envelope.events is None:
        return _slow(data)
    else:
        items = envelope.events
        out.envelope = True
        out.publisher_dropped = envelope.publisher_dropped
    append, append_time = out.events.append, out.times.append
    verbatim = True
    for item in items:
        fast = fast_event(item)
        if fast is None:
            return _slow(data)
        append(fast[0])
        append_time(fast[1])
        if not fast[2]:
            verbatim = False
    out.verbatim = verbatim
    return out


def screen_event_times(
    decoded: Decoded, record_ms: float | None, max_future_ms: float | None, max_past_ms: float | None
) -> None:
    """Move the events whose time is out of the window to ``decoded.invalid``
    (:class:`~contest_telemetry.schema.EventTimeError`, with their index in an envelope).

    The record's timestamp is the producer's CreateTime: a hub chooses it, so it is not trusted
    alone. An event more than ``max_future_ms`` ahead of ``min(record_ms, now)`` is out (a record
    stamped far ahead cannot carry a far-future event past the check, and a backlog read late is
    still judged against its own, older, record time). An event more than ``max_past_ms`` behind
    ``record_ms`` is out: against the record, not now, so a worker catching up on a backlog does
    not dead-letter events that were on time when sent (archive replays stamp records with the
    time of the replay, where both agree). A ``record_ms`` of None or <= 0 (no timestamp, or one
    a producer set to 0) means now for both bounds, never "no check". Events without a timestamp
    (they take the record's) always pass."""
    if max_future_ms is None and max_past_ms is None:
        return
    now = time.time() * 1000.0
    given = record_ms is not None and record_ms > 0
    if given:
        assert record_ms is not None
        future_ref, past_ref = min(record_ms, now), record_ms
    else:
        future_ref = past_ref = now
    hi = future_ref + max_future_ms if max_future_ms is not None else math.inf
    lo = past_ref - max_past_ms if max_past_ms is not None else -math.inf
    times = decoded.times
    bad = [i for i, t in enumerate(times) if t is not None and not lo <= t <= hi]
    if not bad:
        return
    from contest_telemetry.schema import EventTimeError, FieldError

    # An event's place in its envelope: valid events fill the places the invalid ones left.
    taken = {inv.index for inv in decoded.invalid}
    places = [i for i in range(len(times) + len(taken)) if i not in taken][: len(times)]
    for i in reversed(bad):
        ev, t = decoded.events.pop(i), times.pop(i)
        assert t is not None
        if t > hi:
            ref = "from its record's timestamp or now, whichever is earlier" if given else "from now"
            off = (t - future_ref) / 1000.0
        else:
            ref = "from its record's timestamp" if given else "from now"
            off = (t - past_ref) / 1000.0
        error = EventTimeError(
            f"{ev['message']}: timestamp: {off:+.0f} s {ref}",
            [FieldError("timestamp", f"{off:+.0f} s {ref}, beyond the allowed window")],
        )
        decoded.invalid.append(InvalidEvent(error, places[i] if decoded.envelope else None, ev))
