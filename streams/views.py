"""The exporter's views of the engine: each hub's last closed windows, kept as they close.

:class:`RollingViews` holds, per hub, the windows of its rolling view (``CT_WORKER_ROLLING_WINDOWS``)
and, per partition, those of the ``_all`` partials. They are decoded from the table once (at a
start or after a rebalance, :mod:`streams.engine_cache`), then kept from the windows as
:mod:`streams.closing` closes them, so a scrape never decodes retained windows.
:meth:`RollingViews.snapshot` merges them for the exporter, possibly from another thread: the
values of these dicts are replaced, never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import orjson

from streams.snapshot import HubWindowView, PipelineSnapshot
from streams.state import PartState, split_lines
from streams.windows import WindowAgg

__all__ = ["ALL_HUB", "RollingViews"]

# The hub name of the per-partition partials (every hub's windows merged).
ALL_HUB = "_all"


class RollingViews:
    def __init__(self, size: int, rolling: int, new_agg: Callable[[int], WindowAgg]) -> None:
        self.size = size
        self.rolling = rolling
        self.new_agg = new_agg
        self.reset()

    def reset(self) -> None:
        # hub -> (its partition, its last closed windows, oldest first).
        self.recent: dict[str, tuple[int | None, tuple[WindowAgg, ...]]] = {}
        # partition -> its last closed ``_all`` partials, oldest first.
        self.all_recent: dict[int, tuple[WindowAgg, ...]] = {}
        # hub -> (id of the windows it was merged from, last, rolling).
        self._view_cache: dict[str, tuple[int, HubWindowView, HubWindowView]] = {}

    # -- kept as the table is read and windows close --------------------------------------------
    def from_lines(self, data: bytes | None) -> tuple[WindowAgg, ...]:
        lines = split_lines(data)[-self.rolling :]
        return tuple(WindowAgg.from_result(orjson.loads(line)) for line in lines)

    def load_hub(self, hub: str, partition: int | None, closed: bytes) -> None:
        self.recent[hub] = (partition, self.from_lines(closed))

    def load_partition(self, partition: int, partials: bytes) -> None:
        self.all_recent[partition] = self.from_lines(partials)

    def hub_closed(
        self,
        hub: str,
        partition: int,
        appended: list[WindowAgg],
        retained: bytes,
        *,
        first: bool,
        recovered: bool,
    ) -> None:
        """The hub closed windows: ``appended`` were added to its retained windows, now
        ``retained`` (``first``: there were none before; ``recovered``: the closing reached the
        table before a crash, so the view is read back from ``retained``)."""
        prior = self.recent.get(hub)
        if not recovered and (prior is not None or first):
            # What the retained lines say, without decoding them again: the windows before
            # (decoded once, at load) and the ones just closed.
            before = prior[1] if prior is not None else ()
            self.recent[hub] = (partition, (*before, *appended)[-self.rolling :])
        else:
            self.recent[hub] = (partition, self.from_lines(retained)[-self.rolling :])

    def partition_closed(self, partition: int, aggs: Sequence[WindowAgg]) -> None:
        recent = (*self.all_recent.get(partition, ()), *aggs)
        self.all_recent[partition] = recent[-self.rolling :]

    def forget(self, hub: str) -> None:
        self.recent.pop(hub, None)
        self._view_cache.pop(hub, None)

    # -- read by the exporter --------------------------------------------------------------------
    def _view(self, hub: str, aggs: tuple[WindowAgg, ...]) -> tuple[HubWindowView, HubWindowView]:
        cached = self._view_cache.get(hub)
        if cached is not None and cached[0] == id(aggs):
            return cached[1], cached[2]
        last = self._as_view(hub, [aggs[-1]])
        rolling = self._as_view(hub, list(aggs[-self.rolling :]))
        self._view_cache[hub] = (id(aggs), last, rolling)
        return last, rolling

    def _as_view(self, hub: str, aggs: list[WindowAgg]) -> HubWindowView:
        merged = self.new_agg(min(a.start for a in aggs))
        for a in aggs:
            merged.merge(a)
        return HubWindowView(
            hub=hub,
            arming=merged.arming,
            resolution=merged.resolution,
            contests=merged.contests,
            participants_sum=merged.participants_sum,
            participants_max=merged.participants_max,
            multi_actor=merged.multi_actor,
            capacity_over_two=merged.capacity_over_two,
            window_start_ms=merged.start,
            window_end_ms=max(a.start for a in aggs) + self.size,
        )

    def snapshot(
        self,
        parts: Mapping[int, PartState],
        newest_event_ms: float | None,
        assigned: set[int] | None = None,
    ) -> PipelineSnapshot:
        """Views of the last closed window and the rolling merge, per hub of the ``assigned``
        partitions and ``_all`` (merged over them). Safe to call from another thread."""
        last: dict[str, HubWindowView] = {}
        rolling: dict[str, HubWindowView] = {}
        for hub, (partition, aggs) in list(self.recent.items()):
            if aggs and (assigned is None or partition in assigned):
                last[hub], rolling[hub] = self._view(hub, aggs)
        by_start: dict[int, list[WindowAgg]] = {}
        for partition, aggs in list(self.all_recent.items()):
            if assigned is None or partition in assigned:
                for agg in aggs:
                    by_start.setdefault(agg.start, []).append(agg)
        if by_start:
            starts = sorted(by_start)
            last[ALL_HUB] = self._as_view(ALL_HUB, by_start[starts[-1]])
            recent = [a for s in starts[-self.rolling :] for a in by_start[s]]
            rolling[ALL_HUB] = self._as_view(ALL_HUB, recent)
        marks = [
            p.watermark
            for n, p in list(parts.items())
            if p.watermark is not None and (assigned is None or n in assigned)
        ]
        return PipelineSnapshot(
            last=last,
            rolling=rolling,
            watermark_ms=min(marks) if marks else None,
            newest_event_time_ms=newest_event_ms,
        )
