"""Kafka record value -> the NDJSON lines the archive keeps, each with its event time.

``contest.events``: one line per *valid* contract event, envelopes unpacked, every event exactly
as the hub sent it (the original object, compact JSON). Invalid events and records that are not
JSON are skipped and counted: the stream worker sends them to the DLQ.

``contest.records``: one line per record whose value is a JSON object, kept as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from contest_telemetry.schema import SchemaError, validate_event
from contest_telemetry.schema.contract import envelope_of, iso_time_ms

__all__ = ["Extracted", "Kind", "event_time_ms", "extract"]

Kind = Literal["events", "records"]


@dataclass(slots=True)
class Extracted:
    lines: list[tuple[bytes, float]] = field(default_factory=list)  # (json without newline, event ms)
    invalid_events: int = 0  # JSON objects that fail the contract (events inside envelopes too)
    junk_records: int = 0  # records that are not JSON at all (or not an object on contest.records)

    @property
    def skipped(self) -> int:
        return self.invalid_events + self.junk_records


def event_time_ms(timestamp: Any, fallback_ms: float) -> float:
    """Epoch ms of an ISO-8601 ``timestamp`` (naive = UTC), else ``fallback_ms``."""
    if isinstance(timestamp, str) and len(timestamp) <= 64:
        try:
            return iso_time_ms(timestamp, False)
        except ValueError:
            return fallback_ms
    return fallback_ms


def _event_line(obj: Any, kafka_ms: float, out: Extracted) -> None:
    try:
        validate_event(obj)
    except SchemaError:
        out.invalid_events += 1
        return
    out.lines.append((orjson.dumps(obj), event_time_ms(obj.get("timestamp"), kafka_ms)))


def extract(kind: Kind, value: bytes | None, kafka_ms: float) -> Extracted:
    """The archive lines of one Kafka record; never raises for bad input."""
    out = Extracted()
    if value is None:
        out.junk_records += 1
        return out
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        out.junk_records += 1
        return out
    if kind == "records":
        if isinstance(obj, dict):
            out.lines.append((orjson.dumps(obj), event_time_ms(obj.get("timestamp"), kafka_ms)))
        else:
            out.junk_records += 1
        return out
    envelope = envelope_of(obj)
    if envelope is not None:
        if envelope.events is None:
            out.invalid_events += 1
            return out
        for item in envelope.events:
            _event_line(item, kafka_ms, out)
        return out
    _event_line(obj, kafka_ms, out)
    return out
