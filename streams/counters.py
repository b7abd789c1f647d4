"""A no-op :class:`sinks.prometheus.counters.CounterSink` for a worker run without an exporter."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["NullCounters"]


class NullCounters:
    def events(self, hub: str, type: str, n: int = 1) -> None:
        pass

    def invalid(self, reason: str, n: int = 1) -> None:
        pass

    def late(self, hub: str, n: int = 1) -> None:
        pass

    def workflow_failures(self, hub: str, n: int = 1) -> None:
        pass

    def multi_actor(self, hub: str, n: int = 1) -> None:
        pass

    def capacity_over_two(self, hub: str, n: int = 1) -> None:
        pass

    def publisher_dropped(self, hub: str, n: int) -> None:
        pass

    def expired_lifecycles(self, n: int = 1) -> None:
        pass

    def processed(self, n: int) -> None:
        pass

    def reread(self, records: int, missing_offsets: int) -> None:
        pass

    def stalls(self, n: int = 1) -> None:
        pass

    def state_bound(self, bound: str, n: int = 1) -> None:
        pass

    def state_writes(self, values: int, nbytes: int) -> None:
        pass

    def state_flush(self, trigger: str) -> None:
        pass

    def observe_arming_ms(self, hub: str, values: Iterable[float]) -> None:
        pass

    def observe_resolution_ms(self, hub: str, values: Iterable[float]) -> None:
        pass
