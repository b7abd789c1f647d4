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
