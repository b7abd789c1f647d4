"""Settings, the hub label cap, PipelineCounters and the collector, read through a registry."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from contest_telemetry.cli.errors import error_line
from contest_telemetry.exceptions import ContestTelemetryError
from sinks.prometheus import (
    ExporterError,
    ExporterSettings,
    ExporterStartError,
    LabelCap,
    PipelineCollector,
    PipelineCounters,
    PipelineSnapshot,
    bound_label,
)
from sinks.prometheus.counters import INVALID_REASONS


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


# ---------------------------------------------------------------------- settings
def test_settings_defaults(monkeypatch: pytest.MonkeyPatch):
    for var in ("HOST", "PORT", "MAX_HUBS", "ENABLED", "MAX_LABEL_LENGTH"):
        monkeypatch.delenv(f"CT_EXPORTER_{var}", raising=False)
    s = ExporterSettings()
    assert (s.host, s.port, s.max_hubs, s.enabled, s.max_label_length) == ("127.0.0.1", 9464, 500, True, 128)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CT_EXPORTER_HOST", "0.0.0.0")
    monkeypatch.setenv("CT_EXPORTER_PORT", "0")
    monkeypatch.setenv("CT_EXPORTER_MAX_HUBS", "3")
    monkeypatch.setenv("CT_EXPORTER_ENABLED", "false")
    s = ExporterSettings()
    assert (s.host, s.port, s.max_hubs, s.enabled) == ("0.0.0.0", 0, 3, False)


@pytest.mark.parametrize(
    "field,value",
    [("port", -1), ("port", 65536), ("max_hubs", 0), ("host", ""), ("threads", 0), ("max_connections", 0)],
)
def test_settings_validation(field: str, value: object):
    """A bad value is the commands' one error line, naming the variable."""
    with pytest.raises(ValidationError) as caught:
        ExporterSettings(**{field: value})  # type: ignore[arg-type]
    line = error_line(caught.value)
    assert line is not None and line.startswith(f"invalid setting CT_EXPORTER_{field.upper()}=")


def test_errors_derive_from_the_project_root():
    assert issubclass(ExporterStartError, ExporterError)
    assert issubclass(ExporterError, ContestTelemetryError)


# ---------------------------------------------------------------------- labels
def test_label_cap_keeps_first_n_and_folds_the_rest():
    cap = LabelCap(2)
    assert [cap.label(h) for h in ("a", "b", "c", "a", "d", "c")] == [
        "a",
        "b",
        "_other",
        "a",
        "_other",
        "_other",
    ]
    assert (cap.kept, cap.folded) == (2, 2)
    assert cap.peek("c") == "_other" and cap.peek("a") == "a" and cap.peek("zzz") is None


def test_raw_values_never_produce_the_reserved_labels():
    """A real hub named ``_all``/``_other`` is a hub like any other (a slot, counted in the cap),
    exported as ``hub:<id>``; ``_all`` and ``_other`` stay the aggregate's and the folded hubs'."""
    cap = LabelCap(2)
    assert cap.label("_all") == "hub:_all"
    assert cap.label("_other") == "hub:_other"
    assert cap.label("x") == "_other"
    assert cap.label("_all") == "hub:_all"
    assert (cap.kept, cap.folded) == (2, 1)


def test_bound_label_truncates_with_a_hash_and_stays_distinct():
    long_a, long_b = "h" * 10_000 + "a", "h" * 10_000 + "b"
    la, lb = bound_label(long_a), bound_label(long_b)
    assert len(la) == len(lb) == 128
    assert la != lb and la.startswith("h" * 100) and "~" in la
    assert bound_label(long_a) == la  # stable
    assert bound_label("hub-1") == "hub-1"
    assert bound_label('we"ird\\hub\nname ü') == 'we"ird\\hub\nname ü'  # any string is kept as is
    assert bound_label("") == "_empty"
    fixed = bound_label("bad\ud800hub")
    fixed.encode("utf-8")  # no lone surrogate left: the page stays encodable
    assert fixed.startswith("bad\ufffdhub~")


def test_label_cap_is_thread_safe():
    cap = LabelCap(100)
    barrier = threading.Barrier(4)

    def work(offset: int) -> None:
        barrier.wait()
        for i in range(5_000):
            cap.label(f"hub-{(i * 7 + offset) % 1_000}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cap.kept == 100
    assert cap.folded == 900


# ---------------------------------------------------------------------- counters
def test_histogram_buckets_include_the_budgets_as_exact_bounds(exporter):
    registry, counters, _ = exporter
    counters.observe_arming_ms("h", [8_000, 8_000.5, 499, 60_001])
    counters.observe_resolution_ms("h", [800, 800.01, 50])
    assert sample(registry, "contest_arming_latency_seconds_bucket", hub="h", le="0.5") == 1
    assert sample(registry, "contest_arming_latency_seconds_bucket", hub="h", le="8.0") == 2
    assert sample(registry, "contest_arming_latency_seconds_bucket", hub="h", le="10.0") == 3
    assert sample(registry, "contest_arming_latency_seconds_bucket", hub="h", le="60.0") == 3
    assert sample(registry, "contest_arming_latency_seconds_bucket", hub="h", le="+Inf") == 4
    assert sample(registry, "contest_arming_latency_seconds_count", hub="h") == 4
    assert sample(registry, "contest_arming_latency_seconds_sum", hub="h") == pytest.approx(76.5005)
    assert sample(registry, "contest_resolution_latency_seconds_bucket", hub="h", le="0.05") == 1
    assert sample(registry, "contest_resolution_latency_seconds_bucket", hub="h", le="0.8") == 2
    assert sample(registry, "contest_resolution_latency_seconds_bucket", hub="h", le="1.0") == 3


def test_invalid_durations_are_ignored(exporter):
    registry, counters, _ = exporter
    counters.observe_arming_ms("h", [float("nan"), -1, float("inf"), 0, 100])
    assert sample(registry, "contest_arming_latency_seconds_count", hub="h") == 2
    assert sample(registry, "contest_arming_latency_seconds_bucket", hub="h", le="0.5") == 2


def test_counters(exporter):
    registry, counters, _ = exporter
    counters.events("h1", "armed", 3)
    counters.events("h1", "telemetry.contest.armed")
    counters.events("h2", "resolved", 2)
    counters.invalid("decode", 2)
    counters.late("h1", 5)
    counters.workflow_failures("h2")
    counters.multi_actor("h1", 2)
    counters.capacity_over_two("h1")
    counters.publisher_dropped("h2", 7)
    counters.expired_lifecycles(4)
    counters.processed(100)
    counters.processed(11)
    counters.reread(30, 1)
    counters.reread(5, 0)
    counters.stalls()
    counters.invalid("ingest_lost_offsets", 12)  # carried with the dead-letter counts, not one
    assert sample(registry, "contest_events_total", hub="h1", type="armed") == 4
    assert sample(registry, "contest_events_total", hub="h2", type="resolved") == 2
    assert sample(registry, "contest_invalid_events_total", reason="decode") == 2
    # documented reasons exist from the start, so rate() works from the first record
    assert sample(registry, "contest_invalid_events_total", reason="validation") == 0
    assert sample(registry, "contest_invalid_events_total", reason="envelope") == 0
    assert sample(registry, "contest_late_events_total", hub="h1") == 5
    assert sample(registry, "contest_workflow_failures_total", hub="h2") == 1
    assert sample(registry, "contest_multi_actor_contests_total", hub="h1") == 2
    assert sample(registry, "contest_capacity_over_two_total", hub="h1") == 1
    assert sample(registry, "contest_publisher_dropped_events_total", hub="h2") == 7
    assert sample(registry, "contest_expired_lifecycles_total") == 4
    assert sample(registry, "contest_processed_events_total") == 111
    assert sample(registry, "contest_input_reread_records_total") == 35
    assert sample(registry, "contest_input_missing_offsets_total") == 1
    assert sample(registry, "contest_input_stalls_total") == 1
    assert sample(registry, "contest_ingest_lost_offsets_total") == 12
    assert sample(registry, "contest_invalid_events_total", reason="ingest_lost_offsets") is None
    assert sample(registry, "contest_exporter_hub_labels_folded_total") == 0


def test_unknown_event_types_and_reasons_are_capped():
    counters = PipelineCounters()
    for i in range(100):
        counters.events("h", f"weird-{i}")
        counters.invalid(f"reason-{i}")
    view = counters.read()
    assert len({t for _, t in view.events}) <= 16 + 1
    assert len(view.invalid) <= len(INVALID_REASONS) + 16 + 1


def test_counters_fold_beyond_the_cap():
    registry = CollectorRegistry()
    counters = PipelineCounters(max_hubs=2)
    registry.register(PipelineCollector(counters))
    for hub in ("a", "b", "c", "d", "c"):
        counters.events(hub, "armed")
        counters.observe_arming_ms(hub, [100])
    assert sample(registry, "contest_events_total", hub="_other", type="armed") == 3
    assert sample(registry, "contest_arming_latency_seconds_count", hub="_other") == 3
    assert sample(registry, "contest_events_total", hub="a", type="armed") == 1
    assert sample(registry, "contest_exporter_hub_labels_folded_total") == 2


# ---------------------------------------------------------------------- collector (snapshot gauges)
def test_snapshot_gauges(exporter, window):
    registry, _, source = exporter
    h1_last = window("h1", arming=[1_000, 2_000, 3_000, 4_000], resolution=[100, 200])
    h1_roll = window(
        "h1",
        arming=[1_000 * i for i in range(1, 21)],  # p95 = 19 s, over the 8 s budget
        resolution=[100, 200, 300],
        contests=4,
        participants_sum=10,
        participants_max=5,
    )
    all_roll = window(
        "_all", arming=[500], resolution=[900], contests=1, participants_sum=2, participants_max=2
    )
    source.snap = PipelineSnapshot(
        last={"h1": h1_last},
        rolling={"h1": h1_roll, "_all": all_roll},
        watermark_ms=1_700_000_000_000,
        newest_event_time_ms=1_700_000_090_000,
        lag={("contest.events", 0): 12, ("contest.events", 3): 0},
    )
    q = "contest_arming_latency_quantile_seconds"
    assert sample(registry, q, hub="h1", view="last", quantile="0.5") == 2.0
    assert sample(registry, q, hub="h1", view="last", quantile="0.99") == 4.0
    assert sample(registry, q, hub="h1", view="rolling", quantile="0.95") == 19.0
    assert sample(registry, q, hub="_all", view="rolling", quantile="0.95") == 0.5
    assert sample(registry, q, hub="_all", view="last", quantile="0.95") is None  # not in the snapshot
    r = "contest_resolution_latency_quantile_seconds"
    assert sample(registry, r, hub="h1", view="last", quantile="0.5") == 0.1
    assert sample(registry, r, hub="_all", view="rolling", quantile="0.5") == 0.9
    assert sample(registry, "contest_budget_breached", hub="h1", stage="arming") == 1
    assert sample(registry, "contest_budget_breached", hub="h1", stage="resolution") == 0
    assert sample(registry, "contest_budget_breached", hub="_all", stage="arming") == 0
    assert sample(registry, "contest_budget_breached", hub="_all", stage="resolution") == 1
    assert sample(registry, "contest_budget_seconds", stage="arming") == 8.0
    assert sample(registry, "contest_budget_seconds", stage="resolution") == 0.8
    assert sample(registry, "contest_participants_average", hub="h1") == 2.5
    assert sample(registry, "contest_participants_max", hub="h1") == 5
    assert sample(registry, "contest_participants_average", hub="_all") == 2.0
    assert sample(registry, "contest_consumer_lag_records", topic="contest.events", partition="0") == 12
    assert sample(registry, "contest_consumer_lag_records", topic="contest.events", partition="3") == 0
    assert sample(registry, "contest_newest_event_age_seconds") == pytest.approx(10.0)
    assert sample(registry, "contest_window_watermark_seconds") == 1_700_000_000.0


def test_empty_digests_and_windows_emit_no_quantiles(exporter, window):
    registry, _, source = exporter
    source.snap = PipelineSnapshot(rolling={"h": window("h")})
    assert (
        sample(registry, "contest_arming_latency_quantile_seconds", hub="h", view="rolling", quantile="0.5")
        is None
    )
    assert sample(registry, "contest_budget_breached", hub="h", stage="arming") == 0
    assert sample(registry, "contest_participants_average", hub="h") is None  # no contests: no average
    assert sample(registry, "contest_newest_event_age_seconds") is None
    assert sample(registry, "contest_window_watermark_seconds") is None


def test_registering_does_not_call_snapshot_and_rejects_duplicates(source):
    registry = CollectorRegistry()
    counters = PipelineCounters()
    registry.register(PipelineCollector(counters, source))
    assert source.calls == 0
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PipelineCollector(counters, source))
    registry.get_sample_value("contest_processed_events_total")
    assert source.calls == 1  # once per scrape


def test_a_failing_snapshot_keeps_the_counters(caplog: pytest.LogCaptureFixture):
    class Broken:
        def snapshot(self) -> PipelineSnapshot:
            raise RuntimeError("state store closed")

    registry = CollectorRegistry()
    counters = PipelineCounters()
    registry.register(PipelineCollector(counters, Broken()))
    counters.processed(3)
    assert registry.get_sample_value("contest_processed_events_total") == 3
    assert "snapshot() failed" in caplog.text


def test_snapshot_hubs_share_the_cap_with_the_counters(window):
    registry = CollectorRegistry()
    counters = PipelineCounters(max_hubs=2)
    source_snap = PipelineSnapshot(
        rolling={
            h: window(h, arming=[100], contests=1, participants_sum=2, participants_max=2) for h in "abc"
        }
    )

    class Src:
        def snapshot(self) -> PipelineSnapshot:
            return source_snap

    registry.register(PipelineCollector(counters, Src()))
    counters.events("c", "armed")  # c takes a slot first
    counters.events("z", "armed")  # fills the cap
    q = "contest_arming_latency_quantile_seconds"
    assert sample(registry, q, hub="c", view="rolling", quantile="0.5") == 0.1
    # a and b are beyond the cap: no per-hub gauges (and never a gauge labelled _other)
    for hub in ("a", "b", "_other"):
        assert sample(registry, q, hub=hub, view="rolling", quantile="0.5") is None
        assert sample(registry, "contest_participants_average", hub=hub) is None
    assert sample(registry, "contest_events_total", hub="z", type="armed") == 1
