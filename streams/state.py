"""The worker's state in its faust table: small values, each written once per flush (or record) that changes it.

Keys (every value one JSON document, bytes, so the table changelogs it without a codec):

- ``p:<n>``: input partition ``n``: watermark, closed window index, last applied offset;
- ``a:<n>``: the partition's retained ``_all`` partials (written when windows close);
- ``h:<hub>``: the hub's small meta value: its partition, ``applied`` (the last *source* offset
  per source partition whose events it contains), closed index, late count, last event time and
  ``pend``, the keys to delete once this value is durable;
- ``w:<hub>\\x1f<idx>``: one open window of the hub (two bounded DDSketches and the participant
  table) with its own ``applied``;
- ``l:<hub>\\x1f<ident>``: one open lifecycle entry (an armed contest or a launched one);
- ``c:<hub>``: the hub's retained closed windows (written when windows close).

So a record writes the windows and entries it touched, the hub's meta value and the partition:
changelog bytes per event do not grow with the number of open contests or retained windows.
A finished contest or a closed window is deleted (a tombstone, so compaction drops it).

Crash consistency. Every key of one input partition goes to the same changelog partition, in the
order of :meth:`streams.processor.Engine.process`: deletions already recorded in a durable ``pend``,
the closed windows (``c:``), the touched windows (``w:``), the touched entries (``l:``), immediate
deletions (entries dropped by the TTL or the open-contest bound), the hub's ``h:`` last, then
``a:`` and ``p:``. After a crash the recovered table is a prefix of those writes and the record is
processed again:

- a hub whose ``h:`` is durable skips the record (its ``applied`` says so);
- otherwise its entries are applied again: applying an event to an entry is idempotent (fields
  are copied, ``seen`` is the event's time), and entries finished or windows closed by the record
  are still there, because their deletion waits in ``pend`` until the ``h:`` naming it is
  durable (issued by a later record of the hub, or when the hub is evicted);
- a window whose ``w:`` is durable takes no event it already counted (its own ``applied``).

Staged writes (the worker's default, ``CT_WORKER_STATE_FLUSH_S`` > 0). Records change only the
engine's caches; :meth:`streams.processor.Engine.flush` writes every key touched since the last
flush once, in the order above, to the changelog partition of its hub (or partition key). A flush
is therefore one large record: after a crash the recovered table is a prefix of it and the worker
reads again from the applied offsets it holds (faust commits offsets only after a flush, see
streams/apply.py; past one, streams/reread.py reads the gap). Two rules make replaying several
records on such a prefix safe: a window's ``applied`` never moves back (a replayed record does not
lower it below what the window already holds), and an evicted hub that comes back before the
flush keeps its new keys (their writes supersede the eviction's deletions). A contest that starts
and finishes between two flushes never reaches the table.
"""

from __future__ import annotations

from typing import Any

import orjson

from streams.exceptions import StateError
from streams.lifecycle import Lifecycle
from streams.windows import WindowAgg

__all__ = [
    "HubState",
    "PartState",
    "all_key",
    "append_lines",
    "as_bytes",
    "as_obj",
    "closed_key",
    "entry_key",
    "hub_key",
    "part_key",
    "split_lines",
    "window_key",
]

VERSION = 2
SEP = "\x1f"


def hub_key(hub: str) -> str:
    return f"h:{hub}"


def closed_key(hub: str) -> str:
    return f"c:{hub}"


def window_key(hub: str, idx: int) -> str:
    return f"w:{hub}{SEP}{idx}"


def entry_key(hub: str, ident: str) -> str:
    return f"l:{hub}{SEP}{ident}"


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


def as_obj(value: Any) -> Any:
    """A table value decoded (the inverse case of :func:`as_bytes`)."""
    if isinstance(value, bytes | str):
        return orjson.loads(value)
    return value


def _kept(data: bytes) -> bytes:
    """An exact-size copy of orjson's output for a value the table keeps: orjson hands back bytes
    in a buffer of at least 4 KiB, which made 100,000 open contests cost 480 MB instead of 40."""
    return bytes(memoryview(data))


def encode_window(hub: str, idx: int, agg: WindowAgg, applied: dict[int, int]) -> bytes:
    return _kept(
        orjson.dumps(
            {
                "hub": hub,
                "idx": idx,
                "applied": {str(k): v for k, v in applied.items()},
                "agg": agg.to_state(),
            }
        )
    )


def encode_entry(hub: str, ident: str, entry: dict[str, Any]) -> bytes:
    return _kept(orjson.dumps({"hub": hub, "i": ident, "e": entry}))


class HubState:
    __slots__ = (
        "applied",
        "closed_k",
        "hub",
        "last_t",
        "late",
        "lifecycle",
        "open",
        "part",
        "pend",
        "pend_new",
        "stored",
        "wapplied",
        "wstored",
    )

    def __init__(self, hub: str, part: int | None, max_open: int = 100_000) -> None:
        self.hub = hub
        self.part = part
        self.applied: dict[int, int] = {}
        self.closed_k: int | None = None
        self.open: dict[int, WindowAgg] = {}  # window index -> aggregate
        self.wapplied: dict[int, dict[int, int]] = {}  # window index -> its own applied offsets
        self.lifecycle = Lifecycle(max_open)
        self.late = 0
        self.last_t: float | None = None
        self.stored: set[str] = set()  # entry idents present in the table
        self.wstored: set[int] = set()  # window indexes present in the table
        self.pend: list[str] = []  # keys to delete, named by a durable h: value
        self.pend_new: list[str] = []  # keys to delete, to be named by the next h: value

    def meta_bytes(self) -> bytes:
        return _kept(
            orjson.dumps(
                {
                    "v": VERSION,
                    "hub": self.hub,
                    "part": self.part,
                    "applied": {str(k): v for k, v in self.applied.items()},
                    "ck": self.closed_k,
                    "late": self.late,
                    "t": self.last_t,
                    "pend": self.pend_new,
                }
            )
        )

    @classmethod
    def from_meta(cls, obj: Any, max_open: int) -> HubState:
        try:
            if obj.get("v") != VERSION:
                raise StateError(f"hub state version {obj.get('v')!r}, expected {VERSION}")
            out = cls(obj["hub"], obj["part"], max_open)
            out.applied = {int(k): v for k, v in obj["applied"].items()}
            out.closed_k = obj["ck"]
            out.late = obj["late"]
            out.last_t = obj["t"]
            out.pend = list(obj["pend"])
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
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


def load_hubs(items: Any, max_open: int) -> dict[str, HubState]:
    """Every hub in the table (``items``: (key, value) pairs), with its windows and entries.

    A window or entry whose ``h:`` never became durable belongs to a hub created fresh here (the
    record that wrote it is processed again); keys named in a durable ``pend`` are left out."""
    metas: dict[str, Any] = {}
    windows: list[Any] = []
    entries: list[Any] = []
    for key, value in items:
        if not isinstance(key, str) or value is None:
            continue
        kind = key[:2]
        if kind == "h:":
            metas[key[2:]] = as_obj(value)
        elif kind == "w:":
            windows.append((key, as_obj(value)))
        elif kind == "l:":
            entries.append((key, as_obj(value)))
    hubs: dict[str, HubState] = {hub: HubState.from_meta(obj, max_open) for hub, obj in metas.items()}
    pending = {key for hs in hubs.values() for key in hs.pend}

    def hub_of(name: str) -> HubState:
        hs = hubs.get(name)
        if hs is None:
            hs = hubs[name] = HubState(name, None, max_open)
        return hs

    try:
        for key, obj in windows:
            if key in pending:
                continue
            hs = hub_of(obj["hub"])
            idx = int(obj["idx"])
            hs.open[idx] = WindowAgg.from_state(obj["agg"])
            hs.wapplied[idx] = {int(k): v for k, v in obj["applied"].items()}
            hs.wstored.add(idx)
        for key, obj in entries:
            if key in pending:
                continue
            hs = hub_of(obj["hub"])
            hs.lifecycle.put(obj["i"], obj["e"])
            hs.stored.add(obj["i"])
    except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
        raise StateError(f"undecodable window or entry state: {exc!r}") from None
    return hubs
