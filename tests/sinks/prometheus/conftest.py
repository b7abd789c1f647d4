"""Fakes for the exporter tests: an exact-quantile digest and a settable SnapshotSource."""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterable

import pytest
from prometheus_client import CollectorRegistry

from sinks.prometheus import HubWindowView, PipelineCollector, PipelineCounters, PipelineSnapshot


class ExactDigest:
    """LatencyDigest with exact nearest-rank quantiles (ms)."""

    def __init__(self, values: Iterable[float] = ()) -> None:
        self.values = sorted(values)

    @property
    def count(self) -> int:
        return len(self.values)

    def quantile(self, q: float) -> float | None:
        if not self.values:
            return None
        n = len(self.values)
        return self.values[min(n - 1, max(0, math.ceil(q * n) - 1))]


class FakeSource:
    """SnapshotSource whose snapshot the test sets (``.snap``); counts ``snapshot()`` calls."""

    def __init__(self, snap: PipelineSnapshot | None = None) -> None:
        self.snap = snap if snap is not None else PipelineSnapshot()
        self.calls = 0

    def snapshot(self) -> PipelineSnapshot:
        self.calls += 1
        return self.snap


def make_window(
    hub: str,
    arming: Iterable[float] = (),
    resolution: Iterable[float] = (),
    *,
    contests: int = 0,
    participants_sum: int = 0,
    participants_max: int = 0,
) -> HubWindowView:
    return HubWindowView(
        hub=hub,
        arming=ExactDigest(arming),
        resolution=ExactDigest(resolution),
        contests=contests,
        participants_sum=participants_sum,
        participants_max=participants_max,
    )


@pytest.fixture
def window() -> Callable[..., HubWindowView]:
    return make_window


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
def exporter(source: FakeSource) -> tuple[CollectorRegistry, PipelineCounters, FakeSource]:
    """A fresh registry (never the global one) with a collector over new counters and ``source``."""
    registry = CollectorRegistry()
    counters = PipelineCounters(max_hubs=500)
    registry.register(PipelineCollector(counters, source, clock=lambda: 1_700_000_100.0))
    return registry, counters, source


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool") or (
        "/usr/bin/promtool" if os.access("/usr/bin/promtool", os.X_OK) else None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is required in CI (apt-get install prometheus)")
        pytest.skip("promtool not installed")
    return path
