"""Hub label slots freed after N idle scrapes, and hub ids that look like the exporter's own labels.

Rules under test (docs/metrics.md, "hub label"):

- a hub's slot is freed by the scrape that ends ``idle_ticks`` scrape intervals (default 40) in a
  row in which its label was used neither by a counter update nor by the scrape's snapshot; its
  series disappear from the page, and a new hub can take the slot;
- every counter series that stays on the page never goes down (``_other`` and the folded-ids
  count included); a freed hub that comes back starts again from 0 (a counter reset);
- real hub ids starting with ``_`` (``_all``, ``_other``, ``_empty``, ...) or with ``hub:`` are
  exported as ``hub:<id>``, in counters and snapshot gauges alike; ``_all``, ``_other`` and
  ``_empty`` are the exporter's own label values.
"""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from sinks.prometheus import LabelCap, PipelineCollector, PipelineCounters, PipelineSnapshot
from sinks.prometheus.labels import DEFAULT_IDLE_TICKS
from sinks.prometheus.server import render_text


class Source:
    """A SnapshotSource whose snapshot the test sets."""

    def __init__(self, snap: PipelineSnapshot) -> None:
        self.snap = snap

    def snapshot(self) -> PipelineSnapshot:
        return self.snap


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(sample name, labels): value}`` of one rendered page (one collect, one tick)."""
    page = render_text(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def hubs_on(page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> set[str]:
    return {dict(labels)["hub"] for n, labels in page if n == name and "hub" in dict(labels)}


def make(
    cap: int, idle: int | None, source: Source | None = None
) -> tuple[CollectorRegistry, PipelineCounters]:
    counters = PipelineCounters(hubs=LabelCap(cap, idle_ticks=idle))
    registry = CollectorRegistry()
    registry.register(PipelineCollector(counters, source))
    return registry, counters


# ---------------------------------------------------------------------- LabelCap
def test_a_slot_is_freed_after_idle_ticks_scrapes_without_use():
    cap = LabelCap(2, idle_ticks=3)
    assert (cap.label("a"), cap.label("b"), cap.label("c")) == ("a", "b", "_other")
    for _ in range(3):  # a is used in every interval, b in none
        assert cap.tick() == []
        cap.label("a")
    assert cap.tick() == ["b"]  # 4th scrape: b unused for 3 whole intervals
    assert (cap.kept, cap.peek("b")) == (1, None)
    assert cap.label("c") == "c"  # the freed slot goes to the next new hub
    assert cap.label("b") == "_other"
    assert cap.folded == 2  # b and c were folded at some point: the count never goes down
    assert cap.held() >= {"a", "c", "_all", "_other"} and "b" not in cap.held()


def test_default_idle_ticks_and_none_keeps_slots_forever():
    assert LabelCap().idle_ticks == DEFAULT_IDLE_TICKS == 40
    cap = LabelCap(1, idle_ticks=None)
    cap.label("a")
    for _ in range(1_000):
        assert cap.tick() == []
    assert cap.label("b") == "_other" and cap.label("a") == "a"
    with pytest.raises(ValueError):
        LabelCap(1, idle_ticks=0)


def test_kept_of_marks_snapshot_hubs_as_used_and_skips_aggregates():
    cap = LabelCap(2, idle_ticks=1)
    assert sorted(cap.kept_of(["a", "_all", "b", "c"], skip=("_all",))) == [("a", "a"), ("b", "b")]
    for _ in range(5):
        assert cap.tick() == []
        cap.kept_of({"a": 1, "_all": 1}.keys(), skip=("_all",))
        cap.label("b")
    assert cap.tick() == []
    assert cap.tick() == ["a", "b"]


# ---------------------------------------------------------------------- through the collector
def test_an_idle_hub_frees_its_slot_and_its_series_disappear():
    registry, counters = make(cap=2, idle=2)
    for hub in ("old", "busy", "new"):
        counters.events(hub, "armed")
    counters.observe_arming_ms("old", [100.0])
    page = scrape(registry)  # scrape 1
    assert hubs_on(page, "contest_events_total") == {"old", "busy", "_other"}
    assert page[("contest_exporter_hub_labels_freed_total", ())] == 0
    counters.events("busy", "armed")
    counters.events("new", "armed")  # folded while the cap is full
    page = scrape(registry)  # scrape 2: old unused for 1 interval
    assert "old" in hubs_on(page, "contest_events_total")
    counters.events("busy", "armed")
    counters.events("new", "armed")
    page = scrape(registry)  # scrape 3: old unused for 2 intervals -> freed by this scrape
    assert "old" not in hubs_on(page, "contest_events_total")
    assert page[("contest_exporter_hub_labels_freed_total", ())] == 1
    assert "old" not in hubs_on(page, "contest_arming_latency_seconds_count")
    counters.events("new", "armed")  # takes the free slot
    page = scrape(registry)
    assert hubs_on(page, "contest_events_total") == {"busy", "new", "_other"}
    assert page[("contest_events_total", (("hub", "new"), ("type", "armed")))] == 1
    assert page[("contest_events_total", (("hub", "_other"), ("type", "armed")))] == 3  # new, folded 3x
    assert page[("contest_exporter_hub_labels_folded_total", ())] == 1


def test_a_hub_in_the_snapshot_keeps_its_slot_without_counter_updates(window):
    source = Source(PipelineSnapshot(rolling={"quiet": window("quiet", arming=[100])}))
    registry, counters = make(cap=1, idle=2, source=source)
    counters.events("quiet", "armed")
    for _ in range(10):
        counters.events("other", "armed")
        page = scrape(registry)
        assert "quiet" in hubs_on(page, "contest_events_total")
        assert "quiet" in hubs_on(page, "contest_arming_latency_quantile_seconds")
    source.snap = PipelineSnapshot()  # the hub left this worker (rebalance) or its windows aged out
    for _ in range(3):
        page = scrape(registry)
    assert "quiet" not in hubs_on(page, "contest_events_total")
    counters.events("other", "armed")
    assert "other" in hubs_on(scrape(registry), "contest_events_total")


def test_exported_counters_never_go_down_under_churn():
    """Random hubs come and go, slots are freed and taken again: a counter sample never goes down
    while its series stays on the page; a freed hub's series leaves the page, its rows are
    dropped (bounded memory), and when it returns it starts again from 0 (a counter reset, which
    rate() handles)."""
    rng = random.Random(12)
    registry, counters = make(cap=5, idle=3)
    seen: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    freed_and_back = 0
    last_hubs: set[str] = set()
    gone: set[str] = set()
    for _ in range(300):
        for _ in range(rng.randrange(0, 6)):
            hub = f"h{rng.randrange(15)}"
            counters.events(hub, rng.choice(["armed", "resolved"]), rng.randrange(1, 4))
            counters.late(hub)
            counters.observe_arming_ms(hub, [rng.uniform(0, 20_000)])
        page = scrape(registry)
        for key in [k for k in seen if k not in page]:
            del seen[key]  # the series left the page: a later one is a new series
        for key, value in page.items():
            name = key[0]
            if name.endswith(("_total", "_count", "_bucket", "_sum")):
                assert value >= seen.get(key, 0), key
                seen[key] = value
        hubs = hubs_on(page, "contest_events_total") - {"_other"}
        assert len(hubs) <= 5
        freed_and_back += len(hubs & gone)
        gone = (gone | (last_hubs - hubs)) - hubs
        last_hubs = hubs
    assert freed_and_back > 0, "no hub ever got a slot back: the test exercised nothing"
    view = counters.read()  # freed hubs' rows are gone: at most the cap plus _other remain
    assert len(view.late) <= 6 and len({h for h, _t in view.events}) <= 6


# ---------------------------------------------------------------------- hub ids vs the exporter's labels
def test_real_hubs_named_like_the_aggregates_get_a_prefix(window):
    snap = PipelineSnapshot(
        rolling={
            "_all": window("_all", arming=[500], contests=1, participants_sum=2, participants_max=2),
            "_other": window("_other", arming=[9_000], contests=1, participants_sum=3, participants_max=3),
            "hub:_all": window("hub:_all", arming=[200]),
            "plain": window("plain", arming=[100]),
        }
    )
    registry, counters = make(cap=10, idle=None, source=Source(snap))
    for hub in ("_all", "_other", "_empty", "_x", "hub:_all", "hub:y", "", "plain"):
        counters.events(hub, "armed")
        counters.late(hub)
    page = scrape(registry)
    assert hubs_on(page, "contest_events_total") == {
        "hub:_all",
        "hub:_other",
        "hub:_empty",
        "hub:_x",
        "hub:hub:_all",
        "hub:hub:y",
        "_empty",  # the empty hub id
        "plain",
    }
    assert hubs_on(page, "contest_late_events_total") == hubs_on(page, "contest_events_total")

    def quantile(hub: str) -> float | None:
        labels = (("hub", hub), ("quantile", "0.5"), ("view", "rolling"))
        return page.get(("contest_arming_latency_quantile_seconds", labels))

    assert quantile("_all") == 0.5  # the snapshot's "_all" is the aggregate
    assert quantile("hub:_other") == 9.0  # a real hub called _other
    assert quantile("hub:hub:_all") == 0.2
    assert quantile("plain") == 0.1
    assert quantile("_other") is None
    assert page[("contest_participants_max", (("hub", "hub:_other"),))] == 3
    assert page[("contest_participants_max", (("hub", "_all"),))] == 2


def test_real_hubs_named_like_the_aggregates_count_toward_the_cap():
    cap = LabelCap(2)
    assert [cap.label(h) for h in ("_all", "_other", "x")] == ["hub:_all", "hub:_other", "_other"]
    assert (cap.kept, cap.folded) == (2, 1)
    assert cap.peek("_all") == "hub:_all"


def test_no_prefix_keeps_reserved_values_as_themselves():
    cap = LabelCap(1, escape_prefix=None)
    assert [cap.label(h) for h in ("_all", "_other", "x", "_all")] == ["_all", "_other", "x", "_all"]
    assert (cap.kept, cap.folded) == (1, 0)
