"""StallWatch (streams/watchdog.py): when an owned partition counts as stalled."""

from __future__ import annotations

from streams.watchdog import StallWatch


def test_stalled_only_after_stall_s_of_waiting_without_progress() -> None:
    watch = StallWatch(30.0)
    assert not watch.observe(0, 10, True, 0.0)
    assert not watch.observe(0, 10, True, 29.9)
    assert watch.observe(0, 10, True, 30.0)
    # forgotten after a verdict: another full period before the next one
    assert not watch.observe(0, 10, True, 31.0)
    assert not watch.observe(0, 10, True, 60.9)
    assert watch.observe(0, 10, True, 61.0)


def test_progress_or_nothing_waiting_restarts_the_clock() -> None:
    watch = StallWatch(30.0)
    watch.observe(1, 10, True, 0.0)
    assert not watch.observe(1, 11, True, 25.0)  # moved
    assert not watch.observe(1, 11, True, 50.0)
    assert not watch.observe(1, 11, False, 54.0)  # caught up: nothing waiting, the clock restarts
    assert not watch.observe(1, 11, True, 60.0)
    assert not watch.observe(1, 11, True, 83.9)
    assert watch.observe(1, 11, True, 84.0)


def test_partitions_are_independent_and_forgotten_on_rebalance() -> None:
    watch = StallWatch(10.0)
    watch.observe(0, 5, True, 0.0)
    watch.observe(1, 7, True, 0.0)
    watch.forget({1})
    assert not watch.observe(0, 5, True, 10.0)  # partition 0 was forgotten: clock restarts
    assert watch.observe(1, 7, True, 10.0)
    watch.observe(2, 1, True, 0.0)
    watch.forget()
    assert not watch.observe(2, 1, True, 100.0)


def test_a_range_deleted_by_retention_is_reported_once_and_not_waited_for() -> None:
    watch = StallWatch(30)
    assert watch.lost(0, position=9, log_start=10) is None  # nothing deleted past the position
    assert watch.lost(0, position=9, log_start=25) == (10, 25)
    assert watch.lost(0, position=9, log_start=25) is None  # once per log start
    assert watch.lost(0, position=9, log_start=30) == (25, 30)  # retention moved on
    # the re-read of [10, 40) that later finds 10 records counts only what was not reported
    assert watch.unreported(0, 10, 40, missing=20) == 0
    assert watch.unreported(0, 10, 40, missing=25) == 5
    assert watch.unreported(1, 10, 40, missing=25) == 25
