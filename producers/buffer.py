"""The publisher's bounded buffer (aiokafka's accumulator): events checked and encoded when they
were recorded, waiting for the sender.

An event is kept as its hub and its JSON bytes (what the sender sends), in two deques in lockstep:
no tuple and no dict per event, fewer objects for the garbage collector to track. At most ``size``
events (``CT_PUBLISHER_BUFFER_SIZE``), counting those the sender took and the broker has not yet
acknowledged (:attr:`EventBuffer.inflight`: they are in memory too, as aiokafka's buffer_memory
counts its in-flight batches): beyond that :meth:`EventBuffer.add` refuses, and the publisher drops
(counted here per hub, for the next envelope's ``publisherDropped``) or waits in
:meth:`EventBuffer.wait_for_room`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from typing import Any

import orjson

__all__ = ["EventBuffer"]


class EventBuffer:
    """``size``: most events held; ``batch``: wake the sender once this many wait (a full envelope)."""

    def __init__(self, size: int, batch: int) -> None:
        self.size = size
        self.batch = batch
        self._hubs: collections.deque[str] = collections.deque()
        self._encoded: collections.deque[bytes] = collections.deque()
        self._dropped: dict[str, int] = collections.defaultdict(int)
        self.ready = asyncio.Event()
        """Set when the sender should send now rather than linger (a full batch, a caller waiting
        for room, a flush); the sender clears it before it waits."""
        self._room = asyncio.Event()
        self.inflight = 0
        """Events drained by the sender whose delivery is not settled (:meth:`settled`)."""

    def __len__(self) -> int:
        return len(self._hubs)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The events buffered, decoded from the bytes the sender will send, oldest first."""
        return (orjson.loads(data) for data in self._encoded)

    def add(self, hub: str, data: bytes) -> bool:
        """Buffer one event of ``hub`` (``data``: its JSON bytes); False, and nothing buffered, when full."""
        hubs = self._hubs
        if len(hubs) + self.inflight >= self.size:
            return False
        hubs.append(hub)
        self._encoded.append(data)
        if len(hubs) >= self.batch:
            self.ready.set()
        return True

    def drop(self, hub: str) -> None:
        """Count an event of ``hub`` that found the buffer full."""
        self._dropped[hub] += 1

    def take_dropped(self, hub: str) -> int:
        """Events of ``hub`` dropped since the last call (then 0 again)."""
        return self._dropped.pop(hub, 0)

    async def wait_for_room(self) -> None:
        """Wake the sender and wait until it next takes what is buffered."""
        self._room.clear()
        self.ready.set()
        await self._room.wait()

    def drain(self) -> tuple[list[str], list[bytes]]:
        """Take every buffered event: their hubs and bytes, oldest first; callers waiting for room wake."""
        hubs, encoded = list(self._hubs), list(self._encoded)
        self._hubs.clear()
        self._encoded.clear()
        self.inflight += len(hubs)
        self._room.set()
        return hubs, encoded

    def settled(self, n: int) -> None:
        """``n`` drained events were delivered or failed: their room is free again."""
        self.inflight -= n
        self._room.set()
