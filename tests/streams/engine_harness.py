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
    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self.settings = settings or WorkerSettings(window_s=60, grace_s=30)
        self.store: dict[str, bytes] = {}
        self.engine = Engine(self.settings, self.store)
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
        for k, v in out.writes[: apply_writes if apply_writes is not None else len(out.writes)]:
            self.store[k] = v
        return out

    def restart(self) -> None:
        """A new process: caches gone, the table recovered from its changelog. Faust's recovery
        JSON-decodes the values (seen on Tansu and Kafka), so the engine gets Python objects back."""
        self.store = {k: orjson.loads(v) if isinstance(v, bytes) else v for k, v in self.store.items()}  # type: ignore[misc]
        self.engine = Engine(self.settings, self.store)
