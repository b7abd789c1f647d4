"""The internal topic between the ingest stage and the faust worker (``CT_TOPIC_INGESTED``).

The ingest stage (:mod:`streams.ingest`) reads ``contest.events`` in batches (one event per record
or publisher envelopes, as hubs send them), validates every event, dead-letters the bad ones and
packs the good ones of one poll into one record per (hub, source partition), keyed by ``hubId``::

    {"message": "telemetry.contest.ingested", "v": 1, "hubId": "hub-1",
     "partition": 3,                     # the source partition of contest.events
     "offsets": [120, 121, 121, ...],    # the source offset of each event (envelopes repeat it)
     "times": [1764..., ...],            # each event's event time, ms (its timestamp, else the record's)
     "events": [{...}, ...],             # normalised events (streams.fastdecode.normalise)
     "deadLetters": {"validation": 2},   # optional: dead letters ingest sent since its last record
     "publisherDropped": 0,              # optional: what the hub's publisher reported dropping
     "wm": 1764...}                      # on the last record of a poll for its worker partition only

A source record's events are never split over two ingested records, and the offsets of one
ingested record are in source order.

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

__all__ = ["INGESTED_MESSAGE", "INGESTED_VERSION", "IngestedBatch", "encode_ingested", "parse_ingested"]

INGESTED_MESSAGE = "telemetry.contest.ingested"
INGESTED_VERSION = 1


@dataclass(slots=True)
class IngestedBatch:
    hub: str
    partition: int
    offsets: list[int]
    times: list[float]
    events: list[dict[str, Any]]
    dead_letters: dict[str, int] = field(default_factory=dict)
    publisher_dropped: int = 0
    wm: float | None = None


def encode_ingested(batch: IngestedBatch) -> bytes:
    doc: dict[str, Any] = {
        "message": INGESTED_MESSAGE,
        "v": INGESTED_VERSION,
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
    if batch.wm is not None:
        doc["wm"] = batch.wm
    return orjson.dumps(doc)


def parse_ingested(obj: Any) -> IngestedBatch | None:
    """The batch in a decoded JSON document, or None when it is not an ingested record.

    Raises ValueError for a record that says it is one but is malformed (the caller dead-letters
    it): the topic is internal, but a stray writer must not crash the worker."""
    if type(obj) is not dict or obj.get("message") != INGESTED_MESSAGE:
        return None
    if obj.get("v") != INGESTED_VERSION:
        raise ValueError(f"ingested record version {obj.get('v')!r}, expected {INGESTED_VERSION}")
    hub, partition = obj.get("hubId"), obj.get("partition")
    offsets, times, events = obj.get("offsets"), obj.get("times"), obj.get("events")
    if not (type(hub) is str and hub and type(partition) is int and partition >= 0):
        raise ValueError("ingested record without hubId or partition")
    if not (type(offsets) is list and type(times) is list and type(events) is list):
        raise ValueError("ingested record without offsets, times or events lists")
    if not len(offsets) == len(times) == len(events):
        raise ValueError("ingested record whose offsets, times and events differ in length")
    dead = obj.get("deadLetters") or {}
    dropped = obj.get("publisherDropped") or 0
    wm = obj.get("wm")
    if wm is not None and not isinstance(wm, int | float):
        raise ValueError("ingested record whose wm is not a number")
    return IngestedBatch(hub, partition, offsets, times, events, dict(dead), int(dropped), wm)
