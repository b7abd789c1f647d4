"""The ``record_*`` methods pass their values by position to their shape (producers/recorders.py):
every argument must land under its own schema field, named by the model's alias."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import pytest

from contest_telemetry.schema import (
    SCHEMA_VERSION,
    ContestEventBase,
    arming_duration_ms,
    resolution_durations,
    validate_event,
)
from producers import ContestPublisher, PublisherSettings, recorders
from producers.recorders import EventShape

SHAPES: dict[str, EventShape] = {
    "record_armed": recorders.ARMED_EVENT,
    "record_launched": recorders.LAUNCHED_EVENT,
    "record_workflow_started": recorders.WORKFLOW_STARTED_EVENT,
    "record_workflow_failed": recorders.WORKFLOW_FAILED_EVENT,
    "record_resolved": recorders.RESOLVED_EVENT,
    "record_expired": recorders.EXPIRED_EVENT,
}
# Values the methods compute from the raw times rather than take (the contract's duration rules).
DERIVED = {"window_ms", "arming_duration_ms", "resolution_duration_ms"}


def _alias(model: type[ContestEventBase], name: str) -> str:
    return model.model_fields[name].alias or name


def _arguments(method: str, t0: float) -> dict[str, Any]:
    """A distinct value for every parameter: strings name themselves, times grow in order."""
    out: dict[str, Any] = {}
    params = inspect.signature(getattr(ContestPublisher, method)).parameters
    for i, (name, param) in enumerate(params.items()):
        ann = str(param.annotation)
        if name in ("self", "extra", "at_ms"):
            continue
        if "list" in ann:
            out[name] = [f"{name}-tag"]
        elif "float" in ann:
            out[name] = t0 + 1000.0 * i
        elif "int" in ann:
            out[name] = 3 + i
        else:
            out[name] = f"{name}-value"
    return out


def _record(method: str, **kwargs: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        pub = ContestPublisher(settings=PublisherSettings())
        pub._open = True  # capture: fill the buffer, never send
        await getattr(pub, method)(**kwargs)
        [event] = list(pub._buffer)
        return event

    return asyncio.run(run())


def _derived(method: str, args: dict[str, Any]) -> dict[str, Any]:
    created, started = args.get("created_at"), args.get("started_at")
    if method == "record_armed":
        return {"window_ms": arming_duration_ms(created, args["expires_at"])}
    if method == "record_launched":
        return {"arming_duration_ms": arming_duration_ms(created, started)}
    if method == "record_resolved":
        arming, resolution = resolution_durations(created, started, args["resolved_at"])
        return {"arming_duration_ms": arming, "resolution_duration_ms": resolution}
    if method == "record_expired":
        return {
            "window_ms": arming_duration_ms(created, args["expires_at"]),
            "arming_duration_ms": arming_duration_ms(created, args["expired_at"]),
        }
    return {}


@pytest.mark.parametrize("method", sorted(SHAPES))
def test_every_argument_lands_under_its_own_field(method: str) -> None:
    shape = SHAPES[method]
    model = shape.model
    now = time.time() * 1000.0
    args = _arguments(method, now - 600_000)
    event = _record(method, **args, at_ms=now, note="extra")
    assert set(shape.fields) - DERIVED == set(args), "a parameter the shape does not take, or the reverse"
    want: dict[str, Any] = {
        _alias(model, "message"): shape.message,
        _alias(model, "level"): model.model_fields["level"].default,
        _alias(model, "schema_version"): SCHEMA_VERSION,
    }
    want.update({_alias(model, name): value for name, value in args.items()})
    want.update({_alias(model, name): value for name, value in _derived(method, args).items()})
    got = {k: v for k, v in event.items() if k not in ("timestamp", "eventId", "note")}
    assert got == want
    assert list(event)[-2:] == ["note", "eventId"]  # the caller's extra fields, then the id publish() adds
    assert isinstance(validate_event(event), model)


@pytest.mark.parametrize("method", sorted(SHAPES))
def test_optional_fields_are_left_out_and_the_others_written_as_null(method: str) -> None:
    shape = SHAPES[method]
    model = shape.model
    params = inspect.signature(getattr(ContestPublisher, method)).parameters
    required = {
        n: f"{n}-value"
        for n, p in params.items()
        if p.default is inspect.Parameter.empty and n not in ("self", "extra")
    }
    event = _record(method, **required)
    # Raw times and tags are left out when None; every other field is written, null or not.
    raw = (
        "created_at",
        "started_at",
        "expires_at",
        "resolved_at",
        "moderation_tags",
        "shared_complication_tags",
    )
    optional = {_alias(model, n) for n in raw if n in model.model_fields}
    written = {_alias(model, name) for name in shape.fields} - optional
    assert written <= set(event)
    assert not optional & set(event)
    assert isinstance(validate_event(event), model)
