"""benchmarks/stream without a broker: the records of each form, the partitioner, targets, the
freshness quantile, sizes, the table and the JSON keys the benchmark promises."""

from __future__ import annotations

import argparse
import time
from collections import Counter

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from benchmarks.stream import cli, forms, kafka_io, live, report
from streams.fastdecode import decode_events


def _events(n: int = 400, hubs: int = 7) -> list[dict]:
    now = time.time() * 1000
    return forms.generate(n, hubs, start_ms=now - 120_000, span_ms=60_000)


def test_single_form_is_one_valid_event_per_record_keyed_by_hub() -> None:
    events = _events()
    records = forms.as_singles(events)
    assert len(records) == len(events)
    for (key, value), ev in zip(records, events, strict=True):
        assert key == ev["hubId"].encode()
        decoded = decode_events(value)
        assert not decoded.invalid
        assert len(decoded.events) == 1
        assert not decoded.envelope


def test_envelope_form_carries_the_same_events_per_hub() -> None:
    events = _events()
    records = forms.as_envelopes(events, flush_every=50)
    assert len(records) < len(events)
    per_hub: Counter[str] = Counter()
    for key, value in records:
        decoded = decode_events(value)
        assert decoded.envelope and not decoded.invalid
        assert {ev["hubId"] for ev in decoded.events} == {key.decode()}
        per_hub[key.decode()] += len(decoded.events)
    assert per_hub == Counter(ev["hubId"] for ev in events)


def test_generated_event_times_are_the_recent_ones_asked_for() -> None:
    now = time.time() * 1000
    events = forms.generate(200, 5, start_ms=now - 120_000, span_ms=60_000)
    times = [decode_events(orjson.dumps(ev)).times[0] for ev in events]
    assert all(t is not None and now - 130_000 < t < now for t in times)
    assert [ev["timestamp"] for ev in events] == sorted(ev["timestamp"] for ev in events)


@pytest.mark.parametrize("partitions", [1, 2, 4, 7])
def test_partition_of_matches_the_default_partitioner(partitions: int) -> None:
    default = DefaultPartitioner()
    ids = list(range(partitions))
    for hub in (f"hub-{i}" for i in range(60)):
        key = hub.encode()
        assert kafka_io.partition_of(key, partitions) == default(key, ids, ids)


def test_quantile_is_the_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert live.quantile(values, 0.5) == 50.0
    assert live.quantile(values, 0.99) == 99.0
    assert live.quantile([7.0], 0.99) == 7.0


def test_targets_are_judged_in_their_direction() -> None:
    meets = report.meets_targets(
        "single",
        {"vs_ceiling": 0.3, "changelog_vs_event_size": 2.5, "freshness_p99_at_80pct_ms": None},
    )
    assert meets == {"vs_ceiling": True, "changelog_vs_event_size": False, "freshness_p99_at_80pct_ms": None}
    meets = report.meets_targets(
        "envelope", {"vs_ceiling": 0.4, "vs_faust": 12.0, "freshness_p99_at_80pct_ms": 900.0}
    )
    assert meets == {"vs_ceiling": False, "vs_faust": True, "freshness_p99_at_80pct_ms": True}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_form_defaults_to_both_and_quick_shrinks_the_sizes() -> None:
    args = _args()
    assert args.form == "both"
    assert cli.size_of(args, "events") == cli.DEFAULTS["events"]
    quick = _args("--quick")
    assert cli.size_of(quick, "events") == cli.QUICK["events"]
    assert cli.size_of(quick, "step_s") == cli.QUICK["step_s"]
    assert cli.size_of(_args("--quick", "--events", "123"), "events") == 123
    assert _args("--form", "single").form == "single"


def _form_result(form: str, **over: object) -> dict:
    r: dict = {
        "events_per_s": 20_000,
        "ceiling_events_per_s": 100_000,
        "vs_ceiling": 0.2,
        "faust_events_per_s": 3_000,
        "vs_faust": 6.67,
        "changelog_bytes_per_event": 80.0,
        "changelog_vs_event_size": 0.34 if form == "single" else None,
        "worker_peak_rss_mb": 210.0,
        "ingest_peak_rss_mb": None,
        "max_sustainable_events_per_s": 2000,
        "max_sustainable_stop": "freshness p99 > 1 s",
        "freshness_p99_at_80pct_ms": 420.0,
        "lost_events": [{"attempt": 1, "applied": 90, "expected": 100}],
        "targets": report.TARGETS[form],
    }
    r.update(over)
    r["meets"] = report.meets_targets(form, r)
    return r


def test_table_has_a_row_per_form_and_survives_missing_figures(capsys: pytest.CaptureFixture[str]) -> None:
    result = {
        "broker": "embedded",
        "events": 1000,
        "partitions": 2,
        "quick": True,
        "forms": {
            "single": _form_result("single"),
            "envelope": _form_result("envelope", events_per_s=None, vs_ceiling=None, vs_faust=None),
        },
    }
    report.print_table(result)
    err = capsys.readouterr().err
    assert "single" in err and "envelope" in err
    assert "(lost 10)" in err
    assert "20,000" in err


def test_live_keys_cover_what_the_live_phase_returns() -> None:
    # The live phase fills these keys (None when skipped or failed): the JSON keys stay stable.
    for key in (
        "max_sustainable_events_per_s",
        "freshness_p99_at_80pct_ms",
        "freshness_steps",
        "live_changelog_bytes_per_event",
        "live_events_per_ingested_record",
    ):
        assert key in live.LIVE_KEYS


def _seen(
    lags_by_window: dict[int, float], hubs: int = 2
) -> tuple[dict[tuple[str, int], float], list[tuple[str, int]]]:
    expected = [(f"hub-{h}", w) for w in sorted(lags_by_window) for h in range(hubs)]
    seen = {(hub, w): w + live.WINDOW_MS + live.GRACE_MS + lags_by_window[w] for hub, w in expected}
    return seen, expected


def test_freshness_growth_tells_a_backlog_from_a_steady_worker() -> None:
    steady, expected = _seen({w * 1000: 100.0 + (w % 2) * 20 for w in range(8)})
    assert live.freshness_growth(steady, expected) == pytest.approx(0.0, abs=20.0)
    # The 32k/s step that passed at p99 954 ms: every window later than the one before.
    growing, expected = _seen({w * 1000: 100.0 + 120 * w for w in range(8)})
    growth = live.freshness_growth(growing, expected)
    assert growth is not None and growth > live.GROWTH_LIMIT_MS


def test_freshness_growth_is_unknown_without_every_result_or_two_windows() -> None:
    seen, expected = _seen({0: 50.0, 1000: 60.0})
    del seen[expected[-1]]
    assert live.freshness_growth(seen, expected) is None
    one, expected_one = _seen({0: 50.0})
    assert live.freshness_growth(one, expected_one) is None
