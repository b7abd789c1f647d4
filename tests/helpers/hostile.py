"""A hostile corpus for the pipeline: records a hub (or anything writing to contest.events) may
send that must each become one dead letter with a reason, never a stopped partition."""

from __future__ import annotations

import datetime
from typing import Any

import orjson

from contest_telemetry.schema import encode_envelope

P = "telemetry.contest."


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def hostile_records(template: dict[str, Any], form: str) -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, expected reason) of bad records, built from one valid ``template`` event of a
    hub that sends nothing else (``hub-bad``): one per record (``single``) or the same bad
    events inside envelopes, each between two copies of ``template`` (``envelope``: those good
    copies are applied, see :func:`good_in_hostile`)."""
    ev = dict(template, hubId="hub-bad")
    bad_events: list[tuple[dict[str, Any] | bytes, str]] = [
        (dict(ev, participantCount=1e20), "validation"),  # a whole float beyond 64 bits
        (dict(ev, participantCount=2.0**64), "validation"),
        (dict(ev, participantCount=-1), "validation"),
        (dict(ev, createdAt=1e300), "validation"),
        (dict(ev, timestamp="0001-01-01T00:00:00+01:00"), "validation"),  # before year 1 in UTC
        (dict(ev, timestamp="9999-12-31T23:59:59-05:00"), "validation"),  # after year 9999 in UTC
        (dict(ev, timestamp="2090-01-01T00:00:00Z"), "event_time"),  # far ahead of its record
        (dict(ev, hubId=""), "validation"),
        (dict(ev, hubId=7), "validation"),
        (dict(ev, message=P + "exploded"), "validation"),
        (dict(ev, schemaVersion=10**7), "validation"),
        ({k: v for k, v in ev.items() if k != "contestKey"}, "validation"),
    ]
    out: list[tuple[bytes | None, bytes | None, str]] = []
    if form == "single":
        for item, reason in bad_events:
            out.append((b"hub-bad", orjson.dumps(item), reason))
        out += [
            (b"hub-bad", b"\x00\xffnot json", "decode"),
            (b"hub-bad", b"", "decode"),
            (b"hub-bad", None, "decode"),  # a tombstone on contest.events
            (b"hub-bad", b"[1, 2, 3]", "validation"),  # JSON, not an event
            (b"hub-bad", b"12", "validation"),
            (b"hub-bad", b"NaN", "decode"),
            (b"hub-bad", _nested(2000), "decode"),
            (b"hub-bad", b"\xff" + bytes(range(256)) * 3200, "decode"),  # ~800 KB, cut in its dead letter
        ]
        return out
    good = dict(ev)
    for item, reason in bad_events:
        if isinstance(item, dict) and item.get("hubId") == "hub-bad":
            # the bad event between two good ones of its hub: only it is dead-lettered
            out.append((b"hub-bad", encode_envelope("hub-bad", [good, item, good]), reason))
    out += [
        (
            b"hub-bad",
            orjson.dumps({"message": P[:-1] + ".batch", "hubId": "hub-bad", "events": 3}),
            "envelope",
        ),
        (
            b"hub-bad",
            b'{"message":"telemetry.contest.batch","hubId":"hub-bad","events":[' + _nested(2000) + b"]}",
            "decode",
        ),
    ]
    return out


def hostile_stamped_records(
    template: dict[str, Any], form: str, now_ms: int
) -> list[tuple[bytes, bytes, int, str]]:
    """(key, value, record timestamp in ms, expected reason) of records whose producer chose the
    Kafka timestamp: a far-future event in a record stamped just as far ahead (within the broker's
    ``log.message.timestamp.after.max.ms``, 1 h by default), and one in a record stamped 0. Both
    must be dead-lettered with ``event_time`` (the bound is from min(record timestamp, now), and
    a timestamp of 0 means now). Envelopes hold the bad event between two copies of ``template``."""
    ahead = now_ms + 45 * 60_000
    when = datetime.datetime.fromtimestamp(ahead / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    bad = dict(template, hubId="hub-bad", timestamp=when + "Z")
    good = dict(template, hubId="hub-bad")
    value = orjson.dumps(bad) if form == "single" else encode_envelope("hub-bad", [good, bad, good])
    return [(b"hub-bad", value, ahead, "event_time"), (b"hub-bad", value, 0, "event_time")]


def good_in_hostile(template: dict[str, Any], form: str) -> list[dict[str, Any]]:
    """The valid events :func:`hostile_records` and :func:`hostile_stamped_records` send beside
    their bad ones (for the reference)."""
    if form == "single":
        return []
    n = sum(1 for _k, _v, r in hostile_records(template, form) if r not in ("envelope", "decode"))
    n += len(hostile_stamped_records(template, form, 0))
    return [dict(template, hubId="hub-bad")] * (2 * n)
