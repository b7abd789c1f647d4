"""The internal topic between the ingest stage and the faust worker (``CT_TOPIC_INGESTED``).

The ingest stage (:mod:`streams.ingest`) reads ``contest.events`` in batches (one event per record
or publisher envelopes, as hubs send them), validates every event, dead-letters the bad ones and
packs the good ones of one poll into *batches*, one per (hub, source partition), and the batches
of one poll into as few records as fit (``CT_INGEST_MAX_BATCH_BYTES``) per worker partition: the
partition of the ingested topic the default partitioner gives each hub. A record is keyed by the
``hubId`` of its first batch, so every hub in it lands where its own key would::

    {"message": "telemetry.contest.ingested", "v": 3,
     "batches": [
       {"hubId": "hub-1",
        "partition": 3,                     # the source partition of contest.events
        "offsets": [120, 121, 121, ...],    # the source offset of each event (envelopes repeat it)
        "times": [1764..., ...],            # each event's event time, ms (its timestamp, else the record's)
        "events": [{...}, ...],             # see "Events" below
        "deadLetters": {"validation": 2},   # optional: dead letters ingest sent since its last record
        "publisherDropped": 0},             # optional: what the hub's publisher reported dropping
       ...],
     "wm": 1764...}                         # on the last record of a poll for its worker partition only

At live rates a poll holds a few events per hub: one record per worker partition (not one per
hub, nearly one per event) keeps faust's per-record cost off the worker. A source record's events
are never split over two batches, and a hub's batches (and the offsets in each) are in source
order. Version 1 records (one batch's fields at the top level) and version 2 (normalised events
only) are still read.

Events (version 3). Each item of ``events`` is one of
- a source record's value *as it came*, spliced in unchanged when the fast decoder found it exact
  (:attr:`streams.fastdecode.Decoded.verbatim`: every event valid, of one hub, its own object with
  the defaults filled in): a single event, or a whole envelope, which stands for its events;
- a normalised event (:func:`streams.fastdecode.normalise`), for every other record.
The worker fills in the defaults an event lacks that are not None (``level`` and a few more,
from :data:`streams.fastdecode.TEMPLATES`) and reads the other fields with ``get``, so both
forms read the same. Splicing spares the stage encoding each event again and
the worker parsing events twice their size (normalised events spell every absent field); the
stage still validates every event. ``CT_INGEST_VERBATIM=false`` writes only normalised events
(version 2), the reference. ``offsets`` and ``times`` have one entry per event either way.

Event time. Packing a poll by hub reorders events of different hubs inside the poll, so the
worker must not move its watermark with each record (a hub's batch would close the windows of the
hubs whose batches come after it). The stage sends each record to the worker partition the
default partitioner gives its key, and puts ``wm``, the largest event time of the poll's events
for that partition, on the poll's last record for it: the worker advances its watermark (and
closes windows) only there. Within a poll, lateness is judged against the watermark of the polls
before it; a poll's events out of order by more than the grace are therefore windowed where the
record-by-record path would count them late (both agree on data in order). The worker deduplicates per hub by (source partition,
source offset): an ingest stage that crashed and sends a poll again (at-least-once) changes
nothing downstream. The faust per-message cost is paid once per ingested record, not per event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from contest_telemetry.schema.contract import ENVELOPE_MESSAGE, PREFIX
from streams.fastdecode import TEMPLATES

__all__ = [
    "INGESTED_MESSAGE",
    "INGESTED_VERSION",
    "IngestedBatch",
    "encode_batch",
    "encode_ingested",
    "encode_record",
    "expand_events",
    "parse_ingested",
]

INGESTED_MESSAGE = PREFIX + "ingested"
INGESTED_VERSION = 3
_HEAD = {
    v: b'{"message":"' + INGESTED_MESSAGE.encode() + b'","v":' + str(v).encode() + b',"batches":['
    for v in (2, 3)
}
_DEFAULTS: dict[str, tuple[tuple[str, Any], ...]] = {
    message: tuple((name, value) for name, value in template.items() if value is not None)
    for message, template in TEMPLATES.items()
}
"""Per event message, the fields whose default is not None (``level``, and a few more)."""
RECORD_OVERHEAD = len(_HEAD[3]) + len(b'],"wm":') + 32
"""Bytes a record adds to its batches (an upper bound)."""


@dataclass(slots=True)
class IngestedBatch:
    hub: str
    partition: int
    offsets: list[int]
    times: list[float]
    events: list[Any]
    """Encoding: normalised events, and source values (``orjson.Fragment``) that stand for their
    events (see the module docstring). Parsed: events with their defaults filled in."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    publisher_dropped: int = 0
    wm: float | None = None


def encode_batch(batch: IngestedBatch) -> bytes:
    """One batch as it goes into a record (its ``wm`` is the record's, see :func:`encode_record`)."""
    doc: dict[str, Any] = {
        "hubId": batch.hub,
        "partition": batch.partition,
        "offsets": batch.offsets,
        "times": batch.times,
        "events": batch.events,
    }
    if batch.dead_letters:
        doc["deadLetters"] = batch.dead_letters
    if batch.publisher_dropped:
        doc["publisherDropped"] = batch.publisher_dropped
    return orjson.dumps(doc)


def encode_record(batches: list[bytes], wm: float | None, version: int = INGESTED_VERSION) -> bytes:
    """A record of encoded batches (:func:`encode_batch`): joined as they are, not re-encoded.
    ``version`` 2 when no batch holds a source value."""
    tail = b"]}" if wm is None else b'],"wm":' + orjson.dumps(wm) + b"}"
    return _HEAD[version] + b",".join(batches) + tail


def encode_ingested(batch: IngestedBatch, version: int = INGESTED_VERSION) -> bytes:
    """A record of one batch (with the batch's ``wm``)."""
    return encode_record([encode_batch(batch)], batch.wm, version)


def expand_events(items: list[Any]) -> list[dict[str, Any]]:
    """A version 3 batch's ``events``: envelopes replaced by their events, and each event given
    the defaults it lacks that are not None (:data:`_DEFAULTS`, in place). Fields whose default is
    None stay absent: the worker reads events with ``get``. Raises ValueError for an item that is
    neither an event the fast decoder knows nor an envelope of them."""
    out: list[dict[str, Any]] = []
    append = out.append
    for item in items:
        if type(item) is not dict:
            raise ValueError("ingested event that is not an object")
        message = item.get("message")
        defaults = _DEFAULTS.get(message)  # type: ignore[arg-type]
        if defaults is None:
            inner = item.get("events") if message == ENVELOPE_MESSAGE else None
            if type(inner) is not list:
                raise ValueError(f"ingested event with message {str(message)[:100]!r}")
            for ev in inner:
                defaults = _DEFAULTS.get(ev.get("message")) if type(ev) is dict else None  # type: ignore[arg-type]
                if defaults is None:
                    raise ValueError("ingested envelope holding an event the fast decoder does not know")
                for name, value in defaults:
                    if name not in ev:
                        ev[name] = value
                append(ev)
            continue
        for name, value in defaults:
            if name not in item:
                item[name] = value
        append(item)
    return out


def parse_ingested(obj: Any) -> list[IngestedBatch] | None:
    """The batches of a decoded JSON document, in order (the record's ``wm`` on the last), or None
    when it is not an ingested record.

    Raises ValueError for a record that says it is one but is malformed (the caller dead-letters
    it): the topic is internal, but a stray writer must not crash the worker."""
    if type(obj) is not dict or obj.get("message") != INGESTED_MESSAGE:
        return None
    version = obj.get("v")
    if version == 1:
        return [_batch(obj, obj.get("wm"), False)]
    if version not in (2, INGESTED_VERSION):
        raise ValueError(f"ingested record version {version!r}, expected 1 to {INGESTED_VERSION}")
    items = obj.get("batches")
    if type(items) is not list or not items:
        raise ValueError("ingested record without batches")
    wm = obj.get("wm")
    last = len(items) - 1
    expand = version == INGESTED_VERSION
    return [_batch(item, wm if i == last else None, expand) for i, item in enumerate(items)]


def _batch(obj: Any, wm: Any, expand: bool) -> IngestedBatch:
    if type(obj) is not dict:
        raise ValueError("ingested batch that is not an object")
    hub, partition = obj.get("hubId"), obj.get("partition")
    offsets, times, events = obj.get("offsets"), obj.get("times"), obj.get("events")
    if not (type(hub) is str and hub and type(partition) is int and partition >= 0):
        raise ValueError("ingested record without hubId or partition")
    if not (type(offsets) is list and type(times) is list and type(events) is list):
        raise ValueError("ingested record without offsets, times or events lists")
    if expand:
        events = expand_events(events)
    if not len(offsets) == len(times) == len(events):
        raise ValueError("ingested record whose offsets, times and events differ in length")
    dead = obj.get("deadLetters") or {}
    dropped = obj.get("publisherDropped") or 0
    if wm is not None and not isinstance(wm, int | float):
        raise ValueError("ingested record whose wm is not a number")
    return IngestedBatch(hub, partition, offsets, times, events, dict(dead), int(dropped), wm)
