"""Bounded memory of folded label values, the type/reason fold counters, and freed hubs' resets.

Rules under test (docs/metrics.md, "Hub labels"):

- a label cap remembers at most ``max_folded`` folded values (``CT_EXPORTER_MAX_FOLDED_HUBS`` for
  hubs); beyond it the least recently folded is forgotten and counted in
  ``contest_exporter_folded_ids_forgotten_total{label}``; a forgotten value that folds again
  counts again in the folded total, which never goes down;
- event types / dead-letter reasons beyond the documented ones and 16 more fold into ``_other``,
  counted in ``contest_exporter_label_values_folded_total{label}``;
- a freed hub that comes back starts its counters from 0 (its rows were dropped).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from contest_telemetry.cli.errors import error_line
from sinks.prometheus import (
    EVENT_TYPES,
    INVALID_REASONS,
    ExporterServer,
    ExporterSettings,
    LabelCap,
    PipelineCollector,
    PipelineCounters,
    start_exporter,
)
from sinks.prometheus.labels import DEFAULT_MAX_FOLDED
from sinks.prometheus.server import render_text
from tests.sinks.prometheus.test_exporter_http import fetch

Page = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Page:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(registry: CollectorRegistry) -> Page:
    """One rendered page (one collect, one tick of the hub cap)."""
    return parse(render_text(registry).decode())


def make(cap: LabelCap) -> tuple[CollectorRegistry, PipelineCounters]:
    counters = PipelineCounters(hubs=cap)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(counters))
    return registry, counters


# ---------------------------------------------------------------------- LabelCap
def test_folded_memory_forgets_the_least_recently_folded():
    cap = LabelCap(1, max_folded=2)
    assert cap.label("kept") == "kept"
    for value in ("a", "b", "c"):  # a is forgotten when c is remembered
        assert cap.label(value) == "_other"
    assert (cap.folded, cap.remembered, cap.forgotten) == (3, 2, 1)
    assert (cap.peek("a"), cap.peek("b"), cap.peek("c")) == (None, "_other", "_other")
    cap.label("b")  # b folds again: now the most recent, c the least
    assert (cap.folded, cap.forgotten) == (3, 1)  # still remembered: not counted again
    cap.label("d")
    assert (cap.peek("b"), cap.peek("c"), cap.peek("d")) == ("_other", None, "_other")
    assert (cap.folded, cap.remembered, cap.forgotten) == (4, 2, 2)
    cap.label("a")  # forgotten, folds again: counted again (the total is an upper bound now)
    assert (cap.folded, cap.remembered, cap.forgotten) == (5, 2, 3)
    assert cap.label("kept") == "kept" and cap.kept == 1


def test_random_ids_do_not_grow_the_folded_memory():
    rng = random.Random(7)
    cap = LabelCap(10, max_folded=100)
    ids = {f"{rng.getrandbits(64):016x}" for _ in range(20_000)}
    for value in ids:
        cap.label(value)
    assert cap.kept == 10
    assert cap.remembered == 100
    assert cap.folded == len(ids) - 10  # distinct ids never fold twice here: each counted once
    assert cap.forgotten == cap.folded - 100


def test_folded_count_stays_exact_within_the_bound():
    cap = LabelCap(2, max_folded=50)
    for _ in range(3):  # the same 50 folded ids again and again: each counted once
        for i in range(52):
            cap.label(f"h{i}")
    assert (cap.folded, cap.remembered, cap.forgotten) == (50, 50, 0)


def test_threads_folding_at_once_keep_the_bound_and_the_counts():
    """Counter updates (worker) and scrapes fold concurrently; the unlocked LRU refresh must
    never fail, and every value remembered is one counted and not forgotten."""
    cap = LabelCap(4, max_folded=64)
    errors: list[BaseException] = []

    def fold(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(20_000):
                cap.label(f"h{rng.randrange(200)}")  # overlapping ids: hits, misses, evictions
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fold, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert cap.kept == 4 and cap.remembered == 64
    assert cap.folded - cap.forgotten == cap.remembered
    assert cap.forgotten > 0


def test_max_folded_must_be_positive():
    assert LabelCap().max_folded == DEFAULT_MAX_FOLDED == 100_000
    with pytest.raises(ValueError, match="max_folded"):
        LabelCap(1, max_folded=0)


# ---------------------------------------------------------------------- settings
def test_max_folded_hubs_setting(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CT_EXPORTER_MAX_FOLDED_HUBS", raising=False)
    assert ExporterSettings().max_folded_hubs == DEFAULT_MAX_FOLDED
    monkeypatch.setenv("CT_EXPORTER_MAX_FOLDED_HUBS", "7")
    settings = ExporterSettings()
    assert settings.max_folded_hubs == 7
    counters = PipelineCounters(max_hubs=1, max_folded_hubs=settings.max_folded_hubs)
    assert counters.hubs.max_folded == 7


def test_a_bad_max_folded_hubs_is_one_line_naming_it():
    with pytest.raises(ValidationError) as caught:
        ExporterSettings(max_folded_hubs=0)
    line = error_line(caught.value)
    assert line is not None and line.startswith("invalid setting CT_EXPORTER_MAX_FOLDED_HUBS=")
    assert "\n" not in line


# ---------------------------------------------------------------------- through the collector
def test_forgotten_hub_ids_are_counted_on_the_page():
    registry, counters = make(LabelCap(1, max_folded=3, idle_ticks=None))
    page = scrape(registry)
    forgotten = "contest_exporter_folded_ids_forgotten_total"
    assert {page[(forgotten, (("label", label),))] for label in ("hub", "type", "reason")} == {0}
    for i in range(6):
        counters.events(f"h{i}", "armed")  # h0 holds the slot, h1..h5 fold: h1 and h2 forgotten
    page = scrape(registry)
    assert page[(forgotten, (("label", "hub"),))] == 2
    assert page[("contest_exporter_hub_labels_folded_total", ())] == 5
    assert page[("contest_events_total", (("hub", "_other"), ("type", "armed")))] == 5
    counters.events("h1", "armed")  # forgotten: counted again as folded
    page = scrape(registry)
    assert page[("contest_exporter_hub_labels_folded_total", ())] == 6
    assert page[(forgotten, (("label", "hub"),))] == 3
    assert page[("contest_events_total", (("hub", "_other"), ("type", "armed")))] == 6


def test_extra_types_and_reasons_fold_into_other_and_are_counted():
    registry, counters = make(LabelCap(10))
    folded = "contest_exporter_label_values_folded_total"
    page = scrape(registry)
    assert page[(folded, (("label", "type"),))] == 0 and page[(folded, (("label", "reason"),))] == 0
    for i in range(16 + 3):  # 16 extra values get a label of their own, 3 fold
        counters.events("hub-a", f"custom{i}", 2)
        counters.invalid(f"why{i}")
    counters.events("hub-a", "custom18")  # already folded: not counted again
    for type_ in EVENT_TYPES:  # documented values never fold
        counters.events("hub-a", type_)
    for reason in INVALID_REASONS:
        counters.invalid(reason)
    page = scrape(registry)
    assert page[(folded, (("label", "type"),))] == 3
    assert page[(folded, (("label", "reason"),))] == 3
    assert page[("contest_events_total", (("hub", "hub-a"), ("type", "_other")))] == 3 * 2 + 1
    assert page[("contest_events_total", (("hub", "hub-a"), ("type", "custom15")))] == 2
    assert ("contest_events_total", (("hub", "hub-a"), ("type", "custom16"))) not in page
    assert page[("contest_invalid_events_total", (("reason", "_other"),))] == 3
    assert page[("contest_invalid_events_total", (("reason", "why0"),))] == 1
    for type_ in EVENT_TYPES:
        assert page[("contest_events_total", (("hub", "hub-a"), ("type", type_)))] == 1


def test_a_freed_hub_that_comes_back_starts_from_zero():
    registry, counters = make(LabelCap(2, idle_ticks=2))
    counters.events("gone", "armed", 5)
    counters.late("gone", 4)
    counters.observe_arming_ms("gone", [100.0, 200.0])
    page = scrape(registry)
    assert page[("contest_events_total", (("hub", "gone"), ("type", "armed")))] == 5
    scrape(registry)
    page = scrape(registry)  # unused for 2 intervals: freed by this scrape
    assert ("contest_events_total", (("hub", "gone"), ("type", "armed"))) not in page
    assert page[("contest_exporter_hub_labels_freed_total", ())] == 1
    view = counters.read()  # its rows were dropped, not just hidden
    assert "gone" not in view.late and "gone" not in view.arming
    assert not [key for key in view.events if key[0] == "gone"]
    counters.events("gone", "armed")
    counters.observe_arming_ms("gone", [300.0])
    page = scrape(registry)
    assert page[("contest_events_total", (("hub", "gone"), ("type", "armed")))] == 1  # reset, not 6
    assert page[("contest_arming_latency_seconds_count", (("hub", "gone"),))] == 1
    assert ("contest_late_events_total", (("hub", "gone"),)) not in page


# ---------------------------------------------------------------------- over HTTP
@pytest.fixture
def folded_server() -> Iterator[tuple[ExporterServer, PipelineCounters]]:
    settings = ExporterSettings(port=0, max_hubs=2, max_folded_hubs=3)
    counters = PipelineCounters(max_hubs=settings.max_hubs, max_folded_hubs=settings.max_folded_hubs)
    registry = CollectorRegistry()
    registry.register(PipelineCollector(counters))
    srv = start_exporter(registry, settings)
    try:
        yield srv, counters
    finally:
        srv.stop()


def test_scraped_page_carries_the_folded_and_forgotten_counters(folded_server):
    srv, counters = folded_server
    for i in range(7):  # 2 hold a slot, 5 fold, 2 of them forgotten (3 remembered)
        counters.events(f"hub-{i}", "armed")
    for i in range(17):
        counters.events("hub-0", f"custom{i}")
        counters.invalid(f"why{i}")
    status, content_type, body = fetch(srv.url)
    assert status == 200 and content_type.startswith("text/plain")
    page = parse(body)
    assert page[("contest_exporter_hub_labels_folded_total", ())] == 5
    assert page[("contest_exporter_folded_ids_forgotten_total", (("label", "hub"),))] == 2
    assert page[("contest_exporter_folded_ids_forgotten_total", (("label", "type"),))] == 0
    assert page[("contest_exporter_label_values_folded_total", (("label", "type"),))] == 1
    assert page[("contest_exporter_label_values_folded_total", (("label", "reason"),))] == 1
    assert page[("contest_events_total", (("hub", "_other"), ("type", "armed")))] == 5
    assert "# TYPE contest_exporter_folded_ids_forgotten_total counter" in body
