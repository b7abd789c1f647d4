"""contest_telemetry/schema/contract.py: the names, times and budgets everything else imports."""

from __future__ import annotations

import math
import typing
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from contest_telemetry.schema import (
    ARMING_BUDGET_MS,
    ENVELOPE_MESSAGE,
    EVENT_MESSAGES,
    EVENT_MODELS,
    EVENT_TYPES,
    FINAL_MESSAGES,
    MAX_MILLIS,
    MIN_EVENT_TIME_MS,
    RESOLUTION_BUDGET_MS,
    AnyContestEvent,
    Envelope,
    encode_envelope,
    envelope_of,
    iso_time_ms,
    ms_to_iso,
    short_type,
)
from sinks.monitor.summary import DEFAULT_ARMING_BUDGET_MS, DEFAULT_RESOLUTION_BUDGET_MS
from sinks.prometheus.collector import ARMING_BUDGET_SECONDS, RESOLUTION_BUDGET_SECONDS
from streams.settings import WorkerSettings
from tests.contest_telemetry.contract_events import ALL


def test_the_models_and_the_hubs_use_the_contract_messages() -> None:
    union = typing.get_args(AnyContestEvent)[0]
    literals = [typing.get_args(cls.model_fields["message"].annotation) for cls in typing.get_args(union)]
    assert [message for (message,) in literals] == list(EVENT_MESSAGES) == list(EVENT_MODELS)
    assert {event["message"] for event in ALL} == set(EVENT_MESSAGES)
    final = {message for message, cls in EVENT_MODELS.items() if cls.FINAL}
    assert final == FINAL_MESSAGES
    assert [short_type(m) for m in EVENT_MESSAGES] == list(EVENT_TYPES)
    assert short_type("other.message") == "other.message"


def test_envelope_of_reads_what_encode_envelope_writes() -> None:
    events = [dict(event) for event in ALL]
    assert envelope_of(orjson.loads(encode_envelope("hub-1", events, 3))) == Envelope(events, 3)
    assert envelope_of(orjson.loads(encode_envelope("hub-1", events))) == Envelope(events, 0)
    assert envelope_of(dict(ALL[0])) is None
    assert envelope_of([ENVELOPE_MESSAGE]) is None


@pytest.mark.parametrize(
    "fields,want",
    [
        ({"events": {"0": {}}}, Envelope(None, 0)),
        ({}, Envelope(None, 0)),
        ({"events": [], "publisherDropped": True}, Envelope([], 0)),
        ({"events": [], "publisherDropped": -2}, Envelope([], 0)),
        ({"events": [], "publisherDropped": 2.0}, Envelope([], 0)),
    ],
)
def test_a_malformed_envelope_says_so(fields: dict[str, object], want: Envelope) -> None:
    assert envelope_of({"message": ENVELOPE_MESSAGE, **fields}) == want


def test_event_times_parse_as_datetime_does_and_bounds_are_optional() -> None:
    now = datetime.now(UTC).replace(microsecond=123_000)
    text = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert iso_time_ms(text) == now.timestamp() * 1000.0
    assert iso_time_ms(text.removesuffix("Z")) == iso_time_ms(text)  # naive is UTC
    assert ms_to_iso(iso_time_ms(text)) == text
    for bad in ("yesterday", "", "2025-13-01T00:00:00Z"):
        with pytest.raises(ValueError, match="ISO-8601"):
            iso_time_ms(bad)
    early = "0001-01-01T00:00:00+01:00"  # an hour before the first representable UTC time
    with pytest.raises(ValueError, match="years 1-9999"):
        iso_time_ms(early)
    assert iso_time_ms(early, False) == MIN_EVENT_TIME_MS - 3_600_000
    assert iso_time_ms("9999-12-31T23:59:59.999Z") == MAX_MILLIS


def test_ms_to_iso_writes_what_datetime_writes_now_and_then() -> None:
    # None is now: a sanity bound, not a timing (the machine may pause this test for a while).
    before = datetime.now(UTC) - timedelta(minutes=1)
    assert before <= datetime.fromisoformat(ms_to_iso()) <= datetime.now(UTC) + timedelta(minutes=1)
    for ms in (0, 1.5, 999.9995, -1, 1_762_243_500_123.4567, MAX_MILLIS, MIN_EVENT_TIME_MS):
        want = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
        assert ms_to_iso(ms) == want.replace("+00:00", "Z"), ms
    with pytest.raises(ValueError):
        ms_to_iso(math.nan)


def test_every_budget_is_the_contract_budget() -> None:
    # streams/settings.py still writes its defaults out; this keeps them equal until it imports them.
    worker = WorkerSettings()
    assert (worker.arming_budget_ms, worker.resolution_budget_ms) == (ARMING_BUDGET_MS, RESOLUTION_BUDGET_MS)
    assert (DEFAULT_ARMING_BUDGET_MS, DEFAULT_RESOLUTION_BUDGET_MS) == (
        ARMING_BUDGET_MS,
        RESOLUTION_BUDGET_MS,
    )
    assert (ARMING_BUDGET_SECONDS * 1000, RESOLUTION_BUDGET_SECONDS * 1000) == (
        ARMING_BUDGET_MS,
        RESOLUTION_BUDGET_MS,
    )
