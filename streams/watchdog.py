"""Stalled input partitions: records waiting, the worker owns the partition, nothing applied.

Seen on Apache Kafka after a SIGKILL and the rebalances that follow it (docs/known-issues.md):
an assigned partition with records waiting that faust-streaming 0.15 never delivers again, while
it reports the partition active, not paused and its flow running. The cause inside faust is not
pinned down (its read offset, below which it drops fetched records without a word, is one
candidate); seeking the partition to the state's next offset, which also resets that read offset,
gets it delivered again. :class:`StallWatch` decides, from periodic observations, when a
partition has had records waiting without progress for long enough; the app then logs faust's
view of the partition and seeks it (streams/app.py). Re-delivered records the state already
applied are skipped, so a false alarm costs a re-read, never a double count.

Retention can delete records before the worker read them (a worker down for longer than the
topic's retention). Records below the log start are not waiting: they are gone. :meth:`StallWatch.lost`
reports such a range once per partition and log start (the app logs and counts it), and the
position used to decide a stall moves to the log start, so a partition whose waiting records were
all deleted is not sought again every ``stall_s`` for good.

One of the three parts of the worker's at-least-once delivery, described together in
:mod:`streams.faust_patches` ("At-least-once delivery"), which also holds the seek
(``refetch``).
"""

from __future__ import annotations

__all__ = ["StallWatch"]


class StallWatch:
    """Per partition, the position last seen and since when it has not moved while records waited."""

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._since: dict[int, tuple[int, float]] = {}
        self.reported_lost: dict[int, int] = {}  # partition -> log start up to which loss was reported

    def lost(self, partition: int, position: int, log_start: int) -> tuple[int, int] | None:
        """Offsets ``[first, stop)`` after ``position`` that retention deleted before they were
        read, the first time this log start shows them (None otherwise)."""
        first = max(position + 1, self.reported_lost.get(partition, 0))
        if log_start <= first:
            return None
        self.reported_lost[partition] = log_start
        return first, log_start

    def unreported(self, partition: int, first: int, stop: int, missing: int) -> int:
        """Of ``missing`` offsets absent from ``[first, stop)``, those :meth:`lost` did not report."""
        reported = max(0, min(stop, self.reported_lost.get(partition, 0)) - first)
        return max(0, missing - reported)

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
