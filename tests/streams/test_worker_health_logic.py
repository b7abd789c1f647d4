"""WorkerHealth's verdicts from faust's state (pure logic: a fake clock and a stand-in app)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from streams.health import InjectedAgentCrash, WorkerHealth
from streams.settings import WorkerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def app_state(*, rebalancing: bool = False, in_recovery: bool = False, completed: bool = True) -> Any:
    event = SimpleNamespace(is_set=lambda: completed)
    tables = SimpleNamespace(_recovery=SimpleNamespace(completed=event))
    app = SimpleNamespace(rebalancing=rebalancing, in_recovery=in_recovery)
    app.__dict__["tables"] = tables  # what faust's cached_property stores once built
    return app


def health(clock: Clock, **settings: Any) -> WorkerHealth:
    return WorkerHealth(WorkerSettings(crash_loop_restarts=3, crash_loop_window_s=60, **settings), clock)


def test_starting_then_recovering_then_ready() -> None:
    h = health(Clock())
    assert h.liveness().ok and h.liveness().reason == "starting"
    assert h.readiness().reason == "starting"
    h.app = app_state(completed=False)
    assert not h.readiness().ok and h.readiness().details == {"inRecovery": False, "recoveryCompleted": False}
    h.app = app_state(rebalancing=True)
    assert h.readiness().reason == "rebalancing"
    h.app = app_state()
    assert h.readiness().reason.startswith("no input partition assigned")
    h.assigned = lambda: {1, 0}
    ready = h.readiness()
    assert ready.ok and ready.details == {"partitions": [0, 1]}


def test_an_unbuilt_recovery_is_not_ready() -> None:
    h = health(Clock())
    h.app = SimpleNamespace(rebalancing=False, in_recovery=False)  # faust built no table manager yet
    h.assigned = lambda: {0}
    assert not h.readiness().ok


def test_crash_loop_fails_liveness_until_a_window_passes_without_a_crash() -> None:
    clock = Clock()
    h = health(clock)
    h.app, h.assigned = app_state(), (lambda: {0})
    for _ in range(2):
        h.agent_crashed(RuntimeError("poison"))
        clock.now += 5
    assert h.liveness().ok  # two crashes: faust restarted the agent, no loop yet
    h.agent_crashed(RuntimeError("poison"))
    verdict = h.liveness()
    assert not verdict.ok and "restarting in a loop" in verdict.reason and "poison" in verdict.reason
    assert verdict.details["agentCrashes"] == 3
    assert not h.readiness().ok
    clock.now += 59
    assert not h.liveness().ok
    clock.now += 1
    assert h.liveness().ok and h.readiness().ok


def test_crashes_further_apart_than_the_window_are_no_loop() -> None:
    clock = Clock()
    h = health(clock)
    h.app = app_state()
    for _ in range(5):
        h.agent_crashed(RuntimeError("rare"))
        clock.now += 31  # three crashes span 62 s > 60 s
    assert h.liveness().ok and h.crashes_total == 5


def test_a_fatal_error_fails_liveness() -> None:
    h = health(Clock())
    h.app = app_state()
    h.app.fatal = RuntimeError("could not apply")
    assert not h.liveness().ok and "could not apply" in h.liveness().reason


def test_fault_injection_raises_on_the_first_n_records_only() -> None:
    h = health(Clock(), fault_agent_crashes=2)
    for offset in range(2):
        with pytest.raises(InjectedAgentCrash, match=f"offset {offset}"):
            h.inject(0, offset)
    h.inject(0, 2)  # no more
