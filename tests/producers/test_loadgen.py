from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from contest_telemetry.schema import decode_record
from producers.loadgen import LoadGenerator, LoadProfile
from tests.conftest import KafkaTarget
from tests.helpers.kafka import consume


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def _steps(profile: LoadProfile, seconds: float = 600.0) -> list:
    gen = LoadGenerator(profile, start_ms=0.0)
    return gen.steps_until(seconds * 1000.0) + gen.drain()


def test_profile_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="hubs"):
        LoadProfile(hubs=0)
    with pytest.raises(ValueError, match="rate"):
        LoadProfile(rate=0)
    with pytest.raises(ValueError, match="breach_share"):
        LoadProfile(breach_share=1.5)


def test_events_are_time_ordered_and_lifecycles_are_consistent() -> None:
    steps = _steps(LoadProfile(hubs=10, rate=400, seed=3), 120)
    times = [s.at_ms for s in steps]
    assert times == sorted(times)
    by_key: dict[str, list[str]] = defaultdict(list)
    for step in steps:
        by_key[step.kwargs["contest_key"]].append(step.method)
    for methods in by_key.values():
        assert methods[0] == "record_armed"
        assert methods[1:] in (
            ["record_expired"],
            ["record_launched", "record_workflow_started", "record_resolved"],
            ["record_launched", "record_workflow_started", "record_workflow_failed"],
        )


def test_breaching_hubs_blow_the_budgets_and_healthy_hubs_do_not() -> None:
    profile = LoadProfile(hubs=10, rate=2000, breach_share=0.3, seed=11)
    gen = LoadGenerator(profile, start_ms=0.0)
    steps = gen.steps_until(600_000.0) + gen.drain()
    arming: dict[bool, list[float]] = defaultdict(list)
    resolution: dict[bool, list[float]] = defaultdict(list)
    for step in steps:
        if step.method == "record_resolved":
            k = step.kwargs
            breaching = k["hub_id"] in gen.breaching
            arming[breaching].append(k["started_at"] - k["created_at"])
            resolution[breaching].append(k["resolved_at"] - k["started_at"])
    assert len(gen.breaching) == 3
    assert _nearest_rank(arming[False], 95) <= 8000 < _nearest_rank(arming[True], 95)
    assert _nearest_rank(resolution[False], 95) <= 800 < _nearest_rank(resolution[True], 95)


def test_multi_share_sets_the_share_of_contests_over_two_participants() -> None:
    steps = _steps(LoadProfile(hubs=5, rate=4000, multi_share=0.25, seed=5), 300)
    launched = [s.kwargs["participant_count"] for s in steps if s.method == "record_launched"]
    share = sum(1 for n in launched if n > 2) / len(launched)
    assert 0.22 < share < 0.28


@pytest.mark.kafka
async def test_loadgen_cli_publishes_through_the_broker(kafka_broker: KafkaTarget, unique: str) -> None:
    topic = f"contest.events.{unique}"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "contest_telemetry",
            "loadgen",
            "--hubs",
            "7",
            "--events",
            "3000",
            "--no-pace",
            "--topic",
            topic,
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["published"] == 3000 and stats["publisher"]["sent"] == 3000
    records = await consume(kafka_broker.bootstrap, topic, count=1, idle=1.0)
    events = [e for r in records for e in decode_record(r.value).events]
    assert len(events) == 3000 and len({e.event_id for e in events}) == 3000
    assert {e.hub_id for e in events} <= {f"hub-{i:04d}" for i in range(7)}


def test_loadgen_bad_flag_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "contest_telemetry", "loadgen", "--breach-share", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "loadgen: argument --breach-share: expected a share between 0 and 1, got '2'"
    ]
