"""The liveness clock shared by the worker and the archiver (pure logic, a fake clock)."""

from __future__ import annotations

import json

from contest_telemetry.health import AlwaysHealthy, ProgressWatch, Verdict


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_records_waiting_without_progress_fail_after_stall_s() -> None:
    clock = Clock()
    watch = ProgressWatch(60.0, clock)
    watch.observe(0, position=10, waiting=True)
    watch.observe(1, position=5, waiting=False)
    clock.now += 59
    watch.observe(0, position=10, waiting=True)
    assert watch.liveness() is None
    clock.now += 1
    watch.observe(0, position=10, waiting=True)
    verdict = watch.liveness()
    assert verdict is not None and not verdict.ok
    assert verdict.details["stalledPartitions"] == {"0": 60.0}
    watch.observe(0, position=11, waiting=True)  # progress: the clock starts again
    assert watch.liveness() is None


def test_nothing_waiting_is_never_a_stall() -> None:
    clock = Clock()
    watch = ProgressWatch(10.0, clock)
    for _ in range(5):
        watch.observe(0, position=3, waiting=False)
        clock.now += 9
    assert watch.liveness() is None


def test_a_silent_loop_fails_and_forget_drops_revoked_partitions() -> None:
    clock = Clock()
    watch = ProgressWatch(30.0, clock)
    assert watch.silent_for() is None and watch.liveness() is None  # never reported: starting
    watch.observe(2, position=1, waiting=True)
    watch.forget({0, 1})
    clock.now += 31
    verdict = watch.liveness()
    assert verdict is not None and "reported nothing for 31 s" in verdict.reason
    watch.beat()
    assert watch.liveness() is None  # partition 2 was forgotten, the loop is back


def test_verdict_body_is_one_json_line_with_stable_keys() -> None:
    body = Verdict(False, "why", {"partitions": [1]}).body("ready")
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    assert list(json.loads(body)) == ["status", "check", "reason", "partitions"]
    assert json.loads(AlwaysHealthy().liveness().body("live"))["status"] == "ok"
