"""Stalled input partitions: records waiting, the worker owns the partition, nothing applied.

Seen on Apache Kafka after a SIGKILL and the rebalances that follow it (docs/known-issues.md):
faust-streaming 0.15 can leave an assigned partition out of the set it fetches (its
back-pressure bookkeeping, ``Consumer._active_partitions`` / ``_buffered_partitions``, is not
reset by every path through a rebalance), and the worker then sits idle with lag that never
drains. :class:`StallWatch` decides, from periodic observations, when a partition has had
records waiting without progress for long enough; the app then logs faust's view of the
partition and puts it back into fetching from the state's applied offset (see streams/app.py).
"""

from __future__ import annotations

__all__ = ["StallWatch"]


class StallWatch:
    """Per partition, the position last seen and since when it has not moved while records waited."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._since: dict[int, tuple[int, float]] = {}

    def observe(self, partition: int, position: int, waiting: bool, now: float) -> bool:
        """Record one observation; True when ``partition`` counts as stalled (then forgotten, so
        the next verdict needs another full ``stall_s``)."""
        seen = self._since.get(partition)
        if not waiting or seen is None or seen[0] != position:
            self._since[partition] = (position, now)
            return False
        if now - seen[1] >= self.stall_s:
            del self._since[partition]
            return True
        return False

    def forget(self, keep: set[int] | None = None) -> None:
        """Drop partitions not in ``keep`` (all when None): after a rebalance, start again."""
        if keep is None:
            self._since.clear()
        else:
            for partition in [p for p in self._since if p not in keep]:
                del self._since[partition]
