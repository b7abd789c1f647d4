"""Closing windows: what the engine does when a partition's watermark passes a window's end.

:meth:`WindowCloser.sweep` closes every window of the partition's hubs below the new closed
index (their results go out and onto the hub's retained windows, ``c:``, and into the
partition's ``_all`` partials, ``a:``), expires lifecycles past ``CT_WORKER_LIFECYCLE_TTL_S`` and evicts
hubs idle past their retained windows. It keeps the exporter's rolling views
(:mod:`streams.views`) from the windows it closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from streams.counters import CounterSink
from streams.engine_cache import TableCache
from streams.outputs import Outputs, Touched
from streams.settings import WorkerSettings
from streams.state import (
    HubState,
    PartState,
    all_key,
    append_lines,
    closed_key,
    entry_key,
    hub_key,
    split_lines,
    window_key,
)
from streams.views import ALL_HUB, RollingViews
from streams.windows import WindowAgg

__all__ = ["WindowCloser"]


def _contains_window(lines: bytes | None, window_id: str) -> bool:
    return bool(lines) and (b'"windowId":' + orjson.dumps(window_id)) in lines  # type: ignore[operator]


class WindowCloser:
    def __init__(
        self,
        settings: WorkerSettings,
        cache: TableCache,
        views: RollingViews,
        counters: CounterSink,
        new_agg: Callable[[int], WindowAgg],
    ) -> None:
        self.settings = settings
        self.size = settings.window_ms
        self.max_value = settings.max_state_value_bytes
        self.idle_windows = settings.idle_hub_windows or settings.retained_windows
        self.cache = cache
        self.views = views
        self.counters = counters
        self.new_agg = new_agg

    def result(self, hub: str, agg: WindowAgg, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        s = self.settings
        return agg.to_result(
            hub,
            self.size,
            arming_budget_ms=s.arming_budget_ms,
            resolution_budget_ms=s.resolution_budget_ms,
            extra=extra,
        )

    def retained(self, existing: bytes | None, lines: list[bytes]) -> bytes:
        """The retained windows with ``lines`` appended, cut to fit one state value."""
        keep = self.settings.retained_windows
        new = append_lines(existing, lines, keep)
        while len(new) > self.max_value and keep > 1:
            keep -= 1
            new = append_lines(new, [], keep)
            self.counters.state_bound("value_size")
        return new

    def sweep(
        self,
        part: PartState,
        k_prev: int | None,
        k_new: int,
        out: Outputs,
        dirty: dict[str, HubState],
        touched: dict[str, Touched],
    ) -> tuple[list[tuple[str, bytes | None]], list[tuple[str, bytes | None]]]:
        """Close every window of the partition's hubs below ``k_new``; expire stale lifecycles;
        evict idle hubs. Returns the closed-window writes and the evictions."""
        partition = part.partition
        cache, views = self.cache, self.views
        assert part.watermark is not None
        ttl_before = part.watermark - self.settings.ttl_ms
        idle_before = part.watermark - self.idle_windows * self.size
        partials: dict[int, WindowAgg] = {}
        writes: list[tuple[str, bytes | None]] = []
        evictions: list[tuple[str, bytes | None]] = []
        ttl_count = collapsed = 0

        def partial(start: int) -> WindowAgg:
            agg = partials.get(start)
            if agg is None:
                agg = partials[start] = self.new_agg(start)
            return agg

        for hs in cache.hubs_of(partition):
            hub = hs.hub
            changed = False
            closing = sorted(idx for idx in hs.open if idx < k_new)
            lines: list[bytes] = []
            appended: list[WindowAgg] = []  # the windows of ``lines``
            existing = cache.get(closed_key(hub))
            recovered = hs.closed_k is not None and (k_prev is None or hs.closed_k > k_prev) and existing
            if recovered:
                # This hub's closing reached the changelog but the partition's did not (a crash):
                # its results for the windows being closed now come from its retained windows.
                for line in split_lines(existing):
                    payload = orjson.loads(line)
                    idx = payload["windowStartMs"] // self.size
                    if (k_prev is None or idx >= k_prev) and idx < k_new:
                        partial(payload["windowStartMs"]).merge(WindowAgg.from_result(payload))
            for idx in closing:
                agg = hs.open.pop(idx)
                hs.wapplied.pop(idx, None)
                if idx in hs.wstored:
                    hs.wstored.discard(idx)
                    hs.pend_new.append(window_key(hub, idx))
                collapsed += agg.arming.collapsed + agg.resolution.collapsed
                payload = self.result(hub, agg)
                data = orjson.dumps(payload)
                out.windows.append((hub.encode(), data))
                if not _contains_window(existing, payload["windowId"]):
                    lines.append(data)
                    appended.append(agg)
                partial(agg.start).merge(agg)
            if closing:
                hs.closed_k = k_new
                new = self.retained(existing, lines) if lines else existing
                if new is not None:
                    writes.append((closed_key(hub), new))
                    views.hub_closed(
                        hub, partition, appended, new, first=existing is None, recovered=bool(recovered)
                    )
                changed = True
            expired = hs.lifecycle.expire(hub, ttl_before)
            if expired:
                ttl_count += len(expired)
                tch = touched.setdefault(hub, Touched())
                for ident, record in expired:
                    out.records.append((hub.encode(), orjson.dumps(record)))
                    if ident in hs.stored:
                        hs.stored.discard(ident)
                        tch.deletes.append(entry_key(hub, ident))
                changed = True
            if changed:
                dirty[hub] = hs
            elif (
                hub not in dirty
                and not hs.open
                and not len(hs.lifecycle)
                and hs.last_t is not None
                and hs.last_t < idle_before
            ):
                # Idle past its retained windows: its state goes (deletions, then h: last).
                evictions.extend((k, None) for k in (*hs.pend, *hs.pend_new, closed_key(hub), hub_key(hub)))
                del cache.hubs[hub]
                views.forget(hub)
                self.counters.state_bound("idle_hubs")
        if ttl_count:
            self.counters.expired_lifecycles(ttl_count)
        if collapsed:
            self.counters.state_bound("sketch_buckets", collapsed)
        if partials:
            existing = cache.get(all_key(partition))
            lines = []
            closed: list[WindowAgg] = []
            for start in sorted(partials):
                agg = partials[start]
                window_id = f"{ALL_HUB}/{partition}/{start}"
                payload = self.result(
                    ALL_HUB,
                    agg,
                    {"windowId": window_id, "scope": "partition", "partition": partition},
                )
                data = orjson.dumps(payload)
                out.windows.append((ALL_HUB.encode(), data))
                if not _contains_window(existing, window_id):
                    lines.append(data)
                closed.append(agg)
            if lines:
                writes.append((all_key(partition), self.retained(existing, lines)))
            views.partition_closed(partition, closed)
        return writes, evictions
