"""What the stream processor reports as it applies events: the stream's interface to whatever
counts them (the exporter's :class:`sinks.prometheus.counters.PipelineCounters` implements it).

Every method of :class:`CounterSink` does nothing, so a worker run without an exporter (and a
test) uses it as it is, and an implementation overrides what it keeps. ``hub`` is the raw hub id:
capping and folding into ``_other`` is the exporter's job. Durations are in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["DLQ_TRUNCATED", "INGEST_LOST_OFFSETS", "CounterSink"]

# Not a dead-letter reason: the key under which the ingest stage reports, in the dead-letter counts
# its packed records carry (streams/ingested.py), offsets of contest.events that retention deleted
# before it read them. The worker passes every carried count to ``invalid``; a sink tells it apart.
INGEST_LOST_OFFSETS = "ingest_lost_offsets"
# Not a dead-letter reason either: the key under which the ingest stage carries how many of its dead
# letters had their payload cut (streams/dlq.py); a sink counts it with ``dlq_truncated``.
DLQ_TRUNCATED = "dlq_truncated"


class CounterSink:
    def events(self, hub: str, type: str, n: int = 1) -> None:
        """``n`` events of ``type`` (short name) applied for ``hub``."""

    def dlq_truncated(self, n: int = 1) -> None:
        """``n`` dead letters whose payload was cut to ``CT_TOPIC_DLQ_MAX_BYTES`` (streams/dlq.py)."""

    def invalid(self, reason: str, n: int = 1) -> None:
        """``n`` records or events dead-lettered for ``reason``; with :data:`INGEST_LOST_OFFSETS`,
        ``n`` input offsets the ingest stage found deleted by retention (nothing dead-lettered)."""

    def late(self, hub: str, n: int = 1) -> None:
        """``n`` events older than the watermark minus the grace."""

    def workflow_failures(self, hub: str, n: int = 1) -> None:
        """``n`` workflowFailed events."""

    def multi_actor(self, hub: str, n: int = 1) -> None:
        """``n`` finished contests with more than two participants."""

    def capacity_over_two(self, hub: str, n: int = 1) -> None:
        """``n`` finished contests with a capacity over two."""

    def publisher_dropped(self, hub: str, n: int) -> None:
        """``n`` events the hub's publisher reported dropping."""

    def expired_lifecycles(self, n: int = 1) -> None:
        """``n`` open contests dropped by the lifecycle TTL."""

    def processed(self, n: int) -> None:
        """``n`` events applied to state."""

    def reread(self, records: int, missing_offsets: int) -> None:
        """Records read again by the worker, and offsets absent from the log in those ranges."""

    def stalls(self, n: int = 1) -> None:
        """Owned partitions found stalled and put back into fetching."""

    def state_bound(self, bound: str, n: int = 1) -> None:
        """A bound on the state acted ``n`` times (``bound``: which)."""

    def state_writes(self, values: int, nbytes: int) -> None:
        """State values (and tombstones) written to the changelog, and their bytes."""

    def state_flush(self, trigger: str) -> None:
        """The staged state was written (``trigger``: interval, events or commit)."""

    def observe_arming_ms(self, hub: str, values: Iterable[float]) -> None:
        """Arming latencies of ``hub``."""

    def observe_resolution_ms(self, hub: str, values: Iterable[float]) -> None:
        """Resolution latencies of ``hub``."""
