"""The engine's decoded copy of the state table: hubs and partitions, read once, then kept.

:class:`TableCache` decodes every hub of the table in one pass over its keys the first time a
record needs one (after a start or a rebalance: :meth:`TableCache.reset`), and a partition's
``p:`` the first time a record of it comes. Reads see the writes staged since the last flush
first (``staged``, see "Staged writes" in streams/state.py). It fills the exporter's rolling
views (:mod:`streams.views`) from the retained windows it reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from streams.state import HubState, PartState, all_key, as_bytes, closed_key, load_hubs, part_key
from streams.views import RollingViews

__all__ = ["Store", "TableCache"]


class Store(Protocol):
    def get(self, key: str) -> Any: ...
    def keys(self) -> Iterable[str]: ...
    def items(self) -> Iterable[tuple[str, Any]]: ...


class TableCache:
    def __init__(self, store: Store, max_open: int, views: RollingViews) -> None:
        self.store = store
        self.max_open = max_open
        self.views = views
        self.reset()

    def reset(self) -> None:
        """Forget decoded state (the table is the truth); the staged writes go too."""
        self.hubs: dict[str, HubState] = {}
        self.parts: dict[int, PartState] = {}
        self.loaded = False
        # key -> (value, its changelog partition): closed windows (c:, a:) and evicted keys
        # (None) since the last flush, last operation wins.
        self.staged: dict[str, tuple[bytes | None, int]] = {}

    def get(self, key: str) -> bytes | None:
        staged = self.staged.get(key)
        if staged is not None:
            return staged[0]
        return as_bytes(self.store.get(key))

    def load(self) -> None:
        """Decode every hub of the table once: one pass over the keys, so a hub's entries and
        windows never need a lookup per key."""
        self.hubs = load_hubs(list(self.store.items()), self.max_open)
        for hub, hs in self.hubs.items():
            closed = self.get(closed_key(hub))
            if closed:
                self.views.load_hub(hub, hs.part, closed)
        self.loaded = True

    def hub(self, hub: str, partition: int) -> HubState:
        hs = self.hubs.get(hub)
        if hs is None:
            hs = self.hubs[hub] = HubState(hub, partition, self.max_open)
        return hs

    def part(self, partition: int) -> PartState:
        ps = self.parts.get(partition)
        if ps is None:
            data = self.get(part_key(partition))
            ps = PartState.from_bytes(partition, data) if data else PartState(partition)
            self.parts[partition] = ps
            partials = self.get(all_key(partition))
            if partials:
                self.views.load_partition(partition, partials)
        return ps

    def peek_applied(self, partition: int) -> int:
        """The partition's applied offset without caching it (a read during recovery must not
        leave a stale cached state)."""
        cached = self.parts.get(partition)
        if cached is not None:
            return cached.applied
        data = self.get(part_key(partition))
        return PartState.from_bytes(partition, data).applied if data else -1

    def hubs_of(self, partition: int) -> list[HubState]:
        return [hs for hs in self.hubs.values() if hs.part == partition]
