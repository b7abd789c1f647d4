"""Table values: one per hub (``h:<hub>``), its retained closed windows (``c:<hub>``), one per
input partition (``p:<n>``) and the partition's retained ``_all`` partials (``a:<n>``).

Every value is bytes (orjson) so the faust table stores and changelogs it without a codec; the
worker keeps decoded objects in a cache and writes each touched key once per Kafka record.

Idempotence: a hub value holds ``applied`` = the last source offset (per input partition) whose
events it contains; a record at an offset <= applied is skipped for that hub. The partition value
holds the watermark and its own ``applied``. All keys of one input partition go to the same
changelog partition and are written in a fixed order per record (hubs, their retained windows,
``a:``, then ``p:`` last), so after a crash the recovered table is the state after a prefix of
those writes: the partition value is never ahead of a hub's.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.exceptions import StateError
from streams.lifecycle import Lifecycle
from streams.windows import WindowAgg

__all__ = ["HubState", "PartState", "append_lines", "as_bytes", "hub_key", "part_key", "split_lines"]

VERSION = 1


def hub_key(hub: str) -> str:
    return f"h:{hub}"


def closed_key(hub: str) -> str:
    return f"c:{hub}"


def part_key(partition: int) -> str:
    return f"p:{partition}"


def all_key(partition: int) -> str:
    return f"a:{partition}"


def append_lines(existing: bytes | None, lines: list[bytes], keep: int) -> bytes:
    """A JSON array of window results (each already encoded), keeping the last ``keep``."""
    return b"[" + b",".join((split_lines(existing) + lines)[-keep:]) + b"]"


def split_lines(data: bytes | None) -> list[bytes]:
    return [orjson.dumps(item) for item in orjson.loads(data)] if data else []


def as_bytes(value: Any) -> bytes | None:
    """A table value as bytes. Faust's changelog recovery JSON-decodes values even with the raw
    codec (seen on a restart: dicts and lists come back), so every value is one JSON document
    and anything decoded is encoded again here."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return orjson.dumps(value)


class HubState:
    __slots__ = ("applied", "closed_k", "hub", "late", "lifecycle", "open", "part")

    def __init__(self, hub: str, part: int) -> None:
        self.hub = hub
        self.part = part
        self.applied: dict[int, int] = {}
        self.closed_k: int | None = None
        self.open: dict[int, WindowAgg] = {}  # window index -> aggregate
        self.lifecycle = Lifecycle()
        self.late = 0

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": VERSION,
                "hub": self.hub,
                "part": self.part,
                "applied": {str(k): v for k, v in self.applied.items()},
                "ck": self.closed_k,
                "open": [[idx, agg.to_state()] for idx, agg in self.open.items()],
                "lc": self.lifecycle.to_state(),
                "late": self.late,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> HubState:
        try:
            obj: dict[str, Any] = orjson.loads(data)
            if obj.get("v") != VERSION:
                raise StateError(f"hub state version {obj.get('v')!r}, expected {VERSION}")
            out = cls(obj["hub"], obj["part"])
            out.applied = {int(k): v for k, v in obj["applied"].items()}
            out.closed_k = obj["ck"]
            out.open = {int(idx): WindowAgg.from_state(st) for idx, st in obj["open"]}
            out.lifecycle = Lifecycle.from_state(obj["lc"])
            out.late = obj["late"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as exc:
            raise StateError(f"undecodable hub state: {exc!r}") from None
        return out


class PartState:
    __slots__ = ("applied", "closed_k", "partition", "watermark")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.watermark: float | None = None
        self.closed_k: int | None = None
        self.applied = -1

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {"v": VERSION, "wm": self.watermark, "ck": self.closed_k, "applied": self.applied}
        )

    @classmethod
    def from_bytes(cls, partition: int, data: bytes) -> PartState:
        try:
            obj = orjson.loads(data)
            out = cls(partition)
            out.watermark, out.closed_k, out.applied = obj["wm"], obj["ck"], obj["applied"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise StateError(f"undecodable partition state: {exc!r}") from None
        return out
