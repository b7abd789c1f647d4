"""The hub label cap under 100,000 distinct hubs, and no stale series after a rebalance."""

from __future__ import annotations

import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sinks.prometheus import (
    ExporterSettings,
    PipelineCollector,
    PipelineCounters,
    PipelineSnapshot,
    start_exporter,
)
from sinks.prometheus.server import render_text

HUBS = 100_000
CAP = 500


def hub_values(page: str) -> dict[str, set[str]]:
    """``{family: {hub label values}}`` of a text page."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(page):
        values = {s.labels["hub"] for s in family.samples if "hub" in s.labels}
        if values:
            out[family.name] = values
    return out


def test_100k_hubs_emit_at_most_the_cap_plus_other(window):
    counters = PipelineCounters(max_hubs=CAP)
    hubs = [f"hub-{i:06d}" for i in range(HUBS)]
    for hub in hubs:
        counters.events(hub, "armed")
        counters.late(hub)
        counters.workflow_failures(hub)
        counters.multi_actor(hub)
        counters.capacity_over_two(hub)
        counters.publisher_dropped(hub, 1)
        counters.observe_arming_ms(hub, [9_000])
        counters.observe_resolution_ms(hub, [100])
    w = window("x", arming=[9_000], resolution=[100], contests=1, participants_sum=3, participants_max=3)
    views = dict.fromkeys(hubs, w)
    views["_all"] = w
    snap = PipelineSnapshot(last=views, rolling=views, watermark_ms=1.0, newest_event_time_ms=1.0)

    class Src:
        def snapshot(self) -> PipelineSnapshot:
            return snap

    registry = CollectorRegistry()
    registry.register(PipelineCollector(counters, Src()))
    with (
        start_exporter(registry, ExporterSettings(port=0, max_hubs=CAP)) as srv,
        urllib.request.urlopen(srv.url, timeout=30) as resp,
    ):
        page = resp.read().decode()
    per_family = hub_values(page)
    assert per_family, "no hub label at all"
    every = set().union(*per_family.values())
    assert len(every - {"_other", "_all"}) <= CAP
    assert every <= set(hubs[:CAP]) | {"_other", "_all"}  # the first CAP hubs seen keep their label
    for family in (
        "contest_events",
        "contest_late_events",
        "contest_arming_latency_seconds",
        "contest_resolution_latency_seconds",
    ):
        assert len(per_family[family]) == CAP + 1, family  # + _other
        assert "_other" in per_family[family]
    # gauges of folded hubs are dropped (no mergeable digest), _all carries the global view
    quantile_hubs = per_family["contest_arming_latency_quantile_seconds"]
    assert "_other" not in quantile_hubs and "_all" in quantile_hubs and len(quantile_hubs) == CAP + 1
    assert registry.get_sample_value("contest_exporter_hub_labels_folded_total") == HUBS - CAP
    assert registry.get_sample_value("contest_events_total", {"hub": "_other", "type": "armed"}) == HUBS - CAP
    assert registry.get_sample_value("contest_arming_latency_seconds_count", {"hub": "_other"}) == HUBS - CAP
    # folded again on the next scrape: the count stays the number of distinct folded ids
    render_text(registry)
    assert registry.get_sample_value("contest_exporter_hub_labels_folded_total") == HUBS - CAP


def test_a_10kb_hub_id_is_bounded(window):
    counters = PipelineCounters(max_hubs=10)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(counters))
    counters.events("h" * 10_000, "armed")
    page = render_text(registry).decode()
    assert max(len(line) for line in page.splitlines()) < 400


def test_no_stale_series_after_a_rebalance(exporter, window):
    registry, counters, source = exporter

    def snap(hubs: list[str], partitions: list[int]) -> PipelineSnapshot:
        views = {
            h: window(h, arming=[9_000], resolution=[900], contests=2, participants_sum=6, participants_max=4)
            for h in hubs
        }
        return PipelineSnapshot(last=views, rolling=views, lag={("contest.events", p): 5 for p in partitions})

    counters.events("gone", "armed")
    source.snap = snap(["kept", "gone"], [0, 1])
    q = {"hub": "gone", "view": "rolling", "quantile": "0.95"}
    assert registry.get_sample_value("contest_arming_latency_quantile_seconds", q) == 9.0
    assert registry.get_sample_value("contest_budget_breached", {"hub": "gone", "stage": "arming"}) == 1
    assert (
        registry.get_sample_value(
            "contest_consumer_lag_records", {"topic": "contest.events", "partition": "1"}
        )
        == 5
    )

    source.snap = snap(["kept"], [0])  # partition 1 and hub "gone" moved to another worker
    page = render_text(registry).decode()
    gauge_families = (
        "contest_arming_latency_quantile_seconds",
        "contest_resolution_latency_quantile_seconds",
        "contest_budget_breached",
        "contest_participants_average",
        "contest_participants_max",
    )
    for family, values in hub_values(page).items():
        if family in gauge_families:
            assert values == {"kept"}, family
    assert 'partition="1"' not in page
    assert registry.get_sample_value("contest_participants_max", {"hub": "kept"}) == 4
    # counters are cumulative: they keep their series (a reset would corrupt rate())
    assert registry.get_sample_value("contest_events_total", {"hub": "gone", "type": "armed"}) == 1
