"""Drive :class:`streams.processor.Engine` without Kafka (a dict is the table)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson

from contest_telemetry.schema import encode_envelope
from streams.processor import Engine, Outputs
from streams.settings import WorkerSettings


def envelopes(events: list[dict[str, Any]], per: int = 50) -> list[tuple[str, bytes]]:
    """Group consecutive events of a hub into envelopes of up to ``per`` events, keeping order."""
    out: list[tuple[str, bytes]] = []
    pending: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ev in events:
        hub = ev["hubId"]
        pending[hub].append(ev)
        if len(pending[hub]) >= per:
            out.append((hub, encode_envelope(hub, pending.pop(hub))))
    for hub, evs in pending.items():
        out.append((hub, encode_envelope(hub, evs)))
    return out


class Harness:
    def __init__(self, settings: WorkerSettings | None = None, *, stage: bool = False) -> None:
        self.settings = settings or WorkerSettings(window_s=60, grace_s=30)
        self.store: dict[str, Any] = {}
        self.stage = stage
        self.engine = Engine(self.settings, self.store, stage=stage)
        self.offsets: dict[int, int] = defaultdict(int)
        self.windows: list[dict[str, Any]] = []
        self.records: list[dict[str, Any]] = []
        self.dlq: list[dict[str, Any]] = []

    def feed(
        self,
        partition: int,
        key: str | None,
        value: bytes | None,
        *,
        offset: int | None = None,
        apply_writes: int | None = None,
    ) -> Outputs:
        if offset is None:
            offset = self.offsets[partition]
            self.offsets[partition] += 1
        out = self.engine.process(partition, offset, key.encode() if key else None, value, 0.0)
        self.windows.extend(orjson.loads(v) for _, v in out.windows)
        self.records.extend(orjson.loads(v) for _, v in out.records)
        self.dlq.extend(orjson.loads(v) for _, v, _h in out.dlq)
        self.write(out.writes[: apply_writes if apply_writes is not None else len(out.writes)])
        return out

    def write(self, writes: list[tuple[str, bytes | None]]) -> None:
        """What faust's table does with the engine's writes (None: a tombstone)."""
        for k, v in writes:
            if v is None:
                self.store.pop(k, None)
            else:
                self.store[k] = v

    def restart(self) -> None:
        """A new process: caches gone, the table recovered from its changelog. Faust's recovery
        JSON-decodes the values (seen on Tansu and Kafka), so the engine gets Python objects back."""
        self.store = {k: orjson.loads(v) if isinstance(v, bytes) else v for k, v in self.store.items()}  # type: ignore[misc]
        self.engine = Engine(self.settings, self.store, stage=self.stage)

    def flush(self, apply_writes: int | None = None) -> Outputs:
        """Staged mode: write what the records since the last flush changed (a prefix of it: a
        crash during the flush)."""
        out = self.engine.flush()
        self.records.extend(orjson.loads(v) for _, v in out.records)
        assert len(out.write_partitions) == len(out.writes)
        self.write(out.writes[: apply_writes if apply_writes is not None else len(out.writes)])
        return out


def ingested(
    records: list[tuple[str, bytes]], *, source_partition: int = 0, poll: int = 100
) -> list[tuple[str, bytes]]:
    """What an ingest stage makes of ``records`` (source offsets 0, 1, ...) read in polls of
    ``poll`` records: per poll one ingested record with a batch per hub, each event with its
    source offset, and the poll's largest event time (one worker partition here)."""
    from streams.fastdecode import decode_events
    from streams.ingested import IngestedBatch, encode_batch, encode_record

    out: list[tuple[str, bytes]] = []
    for first in range(0, len(records), poll):
        batches: dict[str, IngestedBatch] = {}
        for offset in range(first, min(first + poll, len(records))):
            decoded = decode_events(records[offset][1])
            assert not decoded.invalid
            for ev, t in zip(decoded.events, decoded.times, strict=True):
                batch = batches.get(ev["hubId"])
                if batch is None:
                    batch = batches[ev["hubId"]] = IngestedBatch(ev["hubId"], source_partition, [], [], [])
                batch.offsets.append(offset)
                batch.times.append(0.0 if t is None else t)
                batch.events.append(ev)
        # As the stage packs for one worker partition: every hub's batch in one record, the
        # poll's largest event time on it.
        wm = max(t for b in batches.values() for t in b.times)
        first = next(iter(batches))
        out.append((first, encode_record([encode_batch(b) for b in batches.values()], wm)))
    return out


def forms(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, bytes]]]:
    """The same events as the worker can read them: one per record, publisher envelopes, and
    what the ingest stage makes of either."""
    single = [(ev["hubId"], orjson.dumps(ev)) for ev in events]
    env = envelopes(events, per=30)
    return {
        "single": single,
        "envelope": env,
        "ingested-single": ingested(single, poll=40),
        "ingested-envelope": ingested(env, poll=3),
    }
