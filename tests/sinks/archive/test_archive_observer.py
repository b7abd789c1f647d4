"""The archiver's health state and lag (pure logic: a fake clock, consumer and store)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from sinks.archive.metrics import ArchiveCollector, ArchiveObserver
from sinks.archive.runner import ArchiveStats
from sinks.prometheus.server import render_text


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


TPS = [SimpleNamespace(topic="ev", partition=0), SimpleNamespace(topic="ev", partition=1)]


def consumer(ends: dict[int, int | None]) -> SimpleNamespace:
    return SimpleNamespace(last_stable_offset=lambda tp: ends[tp.partition], highwater=lambda tp: None)


def store(positions: dict[int, int | None]) -> SimpleNamespace:
    return SimpleNamespace(read_position=lambda topic, partition: positions[partition])


def test_ready_after_assignment_and_lag_per_partition() -> None:
    clock = Clock()
    obs = ArchiveObserver(stall_s=60, clock=clock)
    assert not obs.readiness().ok and obs.liveness().ok
    obs.assigned(TPS)
    obs.tick(consumer({0: 10, 1: None}), store({0: 4, 1: None}), TPS)
    assert obs.snapshot()[0] == {("ev", 0): 6}  # partition 1 not fetched yet: unknown, not 0
    assert obs.readiness().ok and obs.readiness().details == {"partitions": 2}


def test_waiting_records_and_a_stuck_position_fail_liveness() -> None:
    clock = Clock()
    obs = ArchiveObserver(stall_s=60, clock=clock)
    obs.assigned(TPS)
    for _ in range(4):
        obs.tick(consumer({0: 10, 1: 0}), store({0: 4, 1: None}), TPS)
        clock.now += 20
    verdict = obs.liveness()
    assert not verdict.ok and verdict.details["stalledPartitions"] == {"ev[0]": 80.0}
    obs.tick(consumer({0: 10, 1: 0}), store({0: 10, 1: None}), TPS)
    assert obs.liveness().ok and obs.liveness().details == {"lagRecords": 0}


def test_a_reassignment_keeps_the_stall_clock_of_kept_partitions_only() -> None:
    clock = Clock()
    obs = ArchiveObserver(stall_s=60, clock=clock)
    obs.assigned(TPS)
    for _ in range(4):
        obs.tick(consumer({0: 10, 1: 9}), store({0: 4, 1: 2}), TPS)
        clock.now += 20
    # A new partition found (the archiver assigns all again): partition 0 is still stuck.
    more = [*TPS, SimpleNamespace(topic="ev", partition=2)]
    obs.assigned(more)
    assert obs.liveness().details["stalledPartitions"] == {"ev[0]": 80.0, "ev[1]": 80.0}
    obs.assigned(TPS[:1])
    assert obs.liveness().details["stalledPartitions"] == {"ev[0]": 80.0}


def test_collector_reports_counts_and_seconds_since_the_last_commit() -> None:
    clock = Clock()
    obs = ArchiveObserver(stall_s=60, clock=clock)
    stats = ArchiveStats(gaps=1, missing_offsets=7)
    stats.by_topic["ev"] = {"records": 3, "lines": 9, "invalidEvents": 0, "junkRecords": 0}
    clock.now += 12
    chunk = SimpleNamespace(is_gap=False, size=300)
    gap = SimpleNamespace(is_gap=True, size=0)
    obs.committed([chunk, gap, chunk])  # type: ignore[list-item]
    clock.now += 4
    registry = CollectorRegistry()
    registry.register(ArchiveCollector(obs, stats))  # type: ignore[arg-type]
    page = render_text(registry).decode()
    for line in (
        'contest_archiver_records_total{topic="ev"} 3.0',
        'contest_archiver_lines_total{topic="ev"} 9.0',
        "contest_archiver_chunks_total 2.0",
        "contest_archiver_bytes_total 600.0",
        "contest_archiver_gaps_total 1.0",
        "contest_archiver_missing_offsets_total 7.0",
        "contest_archiver_seconds_since_last_commit 4.0",
    ):
        assert line in page, page


def test_the_scrape_matches_the_archiver_table_of_docs_metrics() -> None:
    import re
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    doc = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    section = doc.split("## Metrics exported by the archiver")[1].split("\n## ")[0]
    documented = {
        m.group(1): (m.group(2), set(re.findall(r"`([a-z_]+)`", m.group(3))))
        for m in re.finditer(r"^\|\s*`(contest_archiver_[a-z_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", section, re.M)
    }
    obs = ArchiveObserver(stall_s=60, clock=Clock())
    obs.assigned(TPS)
    obs.tick(consumer({0: 3, 1: 0}), store({0: 1, 1: None}), TPS)
    stats = ArchiveStats()
    stats.by_topic["ev"] = {"records": 1, "lines": 1, "invalidEvents": 0, "junkRecords": 0}
    registry = CollectorRegistry()
    registry.register(ArchiveCollector(obs, stats))  # type: ignore[arg-type]
    scraped = {
        (f"{f.name}_total" if f.type == "counter" else f.name): (
            f.type,
            {k for s in f.samples for k in s.labels},
        )
        for f in text_string_to_metric_families(render_text(registry).decode())
    }
    assert scraped == documented
