"""The event models' rules as plain data, for the fast paths that check events without pydantic.

Validating an event with pydantic costs microseconds per event; the stream decoder
(:func:`streams.fastdecode.decode_events`) and the publisher's check
(:func:`producers.encoding.quick_check`) accept well-formed events by these rules instead and
send anything else to the schema's own validation. Both read the rules from here.

The rules come from the models' public description only: each field's type (``model_fields``),
its alias, its default and the :class:`~contest_telemetry.schema.events.FieldRule` marker its
``Annotated`` type carries. A field whose type this module does not know, or whose metadata holds
anything beyond validators and one marker, leaves its model without rules (its events always go
to the schema). pydantic's own constraints measured slower (issue 14: ``TypeAdapter.validate_json``
into strict TypedDicts with bounds, then the same normalisation: 7.5-11.4 against 6.0-7.8
µs/event in envelopes of 200, about even on single-event records).

``CT_FAST_PATH_ENABLED=false`` (:class:`~contest_telemetry.settings.FastPathSettings`, read once
here, at import) empties :data:`FAST_RULES`: every event then takes the schema's path, in the
decoder and in the publisher alike.
"""

from __future__ import annotations

import enum
import functools
import operator
import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.functional_validators import AfterValidator, PlainValidator

from contest_telemetry.schema.events import EVENT_MODELS, ContestEventBase, FieldRule
from contest_telemetry.settings import FastPathSettings

__all__ = ["FAST_PATH_ENABLED", "FAST_RULES", "RULES", "TEMPLATES", "EventRules", "Kind", "event_rules"]

_NONE = type(None)


class Kind(enum.Enum):
    """What a fast path checks of one field (besides None where the field is nullable)."""

    MESSAGE = "message"  # the discriminator: its one Literal value
    TEXT = "text"  # a str
    TAGS = "tags"  # a list of str
    TIER = "tier"  # a str or an int (not a bool)
    ID = FieldRule.ID.value
    MILLIS = FieldRule.MILLIS.value
    COUNT = FieldRule.COUNT.value
    LEVEL = FieldRule.LEVEL.value
    TIMESTAMP = FieldRule.TIMESTAMP.value


# The Python type under each marker: a marker on another type is a mistake, not a rule.
_MARKED_TYPE: dict[FieldRule, Any] = {
    FieldRule.ID: str,
    FieldRule.MILLIS: int | float,
    FieldRule.COUNT: int,
    FieldRule.TIMESTAMP: str,
}
_PLAIN: dict[Any, Kind] = {str: Kind.TEXT, list[str]: Kind.TAGS, str | int: Kind.TIER}


@dataclass(frozen=True, slots=True)
class EventRules:
    """One event model's rules, by wire (camelCase) name, fields in the model's order."""

    model: type[ContestEventBase]
    message: str
    kinds: dict[str, tuple[Kind, bool]]
    """Wire name -> (kind, nullable)."""
    required: frozenset[str]
    template: dict[str, Any]
    """Wire name -> default (None for a required field): what a normalised event starts from."""
    levels: tuple[str, ...]
    """The values ``level`` may take."""


def _is_union(ann: Any) -> bool:
    return typing.get_origin(ann) in (typing.Union, types.UnionType)


def _field_kind(info: FieldInfo) -> tuple[Kind, bool, tuple[str, ...]] | None:
    """(kind, nullable, the Literal's values) of a field; None when this module does not know it."""
    ann: Any = info.annotation
    metadata = list(info.metadata)
    nullable = False
    if _is_union(ann) and _NONE in typing.get_args(ann):
        nullable = True
        rest = tuple(a for a in typing.get_args(ann) if a is not _NONE)
        ann = functools.reduce(operator.or_, rest)
        if typing.get_origin(ann) is typing.Annotated:
            if metadata:
                return None
            ann, *metadata = typing.get_args(ann)
    markers = [m for m in metadata if isinstance(m, FieldRule)]
    if any(not isinstance(m, FieldRule | PlainValidator | AfterValidator) for m in metadata):
        return None  # a constraint without a marker: its rule is unknown here
    if not markers:
        if metadata:
            return None
        kind = _PLAIN.get(ann)
        return None if kind is None else (kind, nullable, ())
    if len(markers) != 1:
        return None
    (rule,) = markers
    if rule is FieldRule.LEVEL:
        levels = typing.get_args(ann)
        ok = typing.get_origin(ann) is typing.Literal and all(type(v) is str for v in levels)
        return (Kind.LEVEL, nullable, levels) if ok and not nullable else None
    if ann != _MARKED_TYPE[rule]:
        return None
    return Kind(rule.value), nullable, ()


def event_rules(model: type[ContestEventBase]) -> EventRules | None:
    """The rules of ``model``; None when a fast path cannot be trusted to match its validation."""
    config = model.model_config
    if not (config.get("strict") and config.get("extra") == "allow" and config.get("populate_by_name")):
        return None
    if model.model_post_init is not BaseModel.model_post_init:
        return None
    message = model.model_fields["message"]
    values = typing.get_args(message.annotation)
    if typing.get_origin(message.annotation) is not typing.Literal or len(values) != 1 or message.metadata:
        return None
    kinds: dict[str, tuple[Kind, bool]] = {}
    required: set[str] = set()
    template: dict[str, Any] = {}
    levels: tuple[str, ...] = ()
    for name, info in model.model_fields.items():
        alias = info.alias or name
        if info.default_factory is not None or info.validation_alias not in (None, alias):
            return None
        if name == "message":
            kinds[alias] = (Kind.MESSAGE, False)
        else:
            found = _field_kind(info)
            if found is None:
                return None
            kind, nullable, literal = found
            kinds[alias] = (kind, nullable)
            if kind is Kind.LEVEL:
                levels = literal
        if info.is_required():
            required.add(alias)
            template[alias] = None
        else:
            template[alias] = info.default
    return EventRules(model, values[0], kinds, frozenset(required), template, levels)


def _all_rules() -> dict[str, EventRules]:
    out: dict[str, EventRules] = {}
    for model in EVENT_MODELS.values():
        rules = event_rules(model)
        if rules is not None:
            out[rules.message] = rules
    return out


RULES: dict[str, EventRules] = _all_rules()
"""The rules of every event model this module understands, by message (read only)."""
TEMPLATES: dict[str, dict[str, Any]] = {message: rules.template for message, rules in RULES.items()}
"""Per message, every field's wire name and default, in the model's order (read only)."""
FAST_PATH_ENABLED: bool = FastPathSettings().enabled
"""``CT_FAST_PATH_ENABLED``: the one place the fast paths are switched on or off."""
FAST_RULES: dict[str, EventRules] = RULES if FAST_PATH_ENABLED else {}
"""The rules the fast paths may use: :data:`RULES`, or none when switched off (read only)."""
