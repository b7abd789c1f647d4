"""The schema's rules for the fast paths (contest_telemetry/schema/fastpath.py): read from the
models' ``Annotated`` markers, refused wherever a field carries a rule without one."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import AfterValidator, Field

from contest_telemetry.schema import EVENT_MESSAGES, EVENT_MODELS, ContestArmed
from contest_telemetry.schema.events import Count, FieldRule, Id, Millis
from contest_telemetry.schema.fastpath import (
    FAST_PATH_ENABLED,
    FAST_RULES,
    RULES,
    TEMPLATES,
    Kind,
    event_rules,
)


def test_every_event_model_has_rules_from_its_markers() -> None:
    assert set(RULES) == set(EVENT_MESSAGES) == set(TEMPLATES)
    assert FAST_PATH_ENABLED and FAST_RULES == RULES
    armed = RULES[EVENT_MESSAGES[0]]
    assert armed.model is EVENT_MODELS[EVENT_MESSAGES[0]]
    assert armed.kinds["hubId"] == (Kind.ID, False)
    assert armed.kinds["createdAt"] == (Kind.MILLIS, True)
    assert armed.kinds["participantCount"] == (Kind.COUNT, False)
    assert armed.kinds["schemaVersion"] == (Kind.COUNT, True)
    assert armed.kinds["timestamp"] == (Kind.TIMESTAMP, True)
    assert armed.kinds["level"] == (Kind.LEVEL, False)
    assert armed.kinds["moderationTags"] == (Kind.TAGS, True)
    assert armed.levels == ("info", "error")
    assert armed.required == {"message", "hubId", "contestKey"}
    # The template is every field in the model's order, with its default.
    assert list(armed.template) == [info.alias or name for name, info in ContestArmed.model_fields.items()]
    assert armed.template["participantCount"] == 1 and armed.template["level"] == "info"


def _unmarked(value: str) -> str:
    if value == "forbidden":
        raise ValueError("forbidden")
    return value


class _UnmarkedValidator(ContestArmed):
    room_id: Annotated[str, AfterValidator(_unmarked)] | None = None


class _UnmarkedConstraint(ContestArmed):
    label: Annotated[str, Field(min_length=3)] | None = None


class _MarkerOnAnotherType(ContestArmed):
    label: Annotated[bytes, FieldRule.ID] | None = None


class _TwoMarkers(ContestArmed):
    label: Annotated[str, FieldRule.ID, FieldRule.TIMESTAMP] | None = None


class _PlainLevel(ContestArmed):
    level: Literal["info", "error"] = "info"


class _UnknownType(ContestArmed):
    label: float | None = None


class _Loose(ContestArmed, strict=False):
    pass


class _NewFieldsWithMarkers(ContestArmed):
    referee_id: Id | None = None
    rounds: Count = 3
    paused_ms: Millis | None = None


@pytest.mark.parametrize(
    "model",
    [
        _UnmarkedValidator,
        _UnmarkedConstraint,
        _MarkerOnAnotherType,
        _TwoMarkers,
        _PlainLevel,
        _UnknownType,
        _Loose,
    ],
)
def test_a_rule_without_its_marker_leaves_the_model_to_the_schema(model: type[ContestArmed]) -> None:
    assert event_rules(model) is None


def test_new_fields_with_markers_get_their_rules() -> None:
    rules = event_rules(_NewFieldsWithMarkers)
    assert rules is not None
    assert rules.kinds["refereeId"] == (Kind.ID, True)
    assert rules.kinds["rounds"] == (Kind.COUNT, False) and rules.template["rounds"] == 3
    assert rules.kinds["pausedMs"] == (Kind.MILLIS, True)
