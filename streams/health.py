"""The worker's ``/healthz`` and ``/readyz`` (served by its exporter, see sinks/prometheus/health.py).

Liveness fails when the worker cannot do its job although the process runs:

- the agent crashed ``CT_WORKER_CRASH_LOOP_RESTARTS`` times within ``CT_WORKER_CRASH_LOOP_WINDOW_S``
  (faust restarts a crashed agent, so a record that crashes it every time leaves a worker that looks
  alive and applies nothing); it passes again once the agent went a whole window without a crash;
- an owned partition had records waiting and none applied for ``CT_WORKER_HEALTH_STALL_S``, or the
  event loop reported nothing for that long (it is fed by the stall watchdog's timer, streams/app.py);
- the worker is stopping on a fatal error (``app.fatal``, streams/apply.py).

Readiness passes only once partitions of the input topic are assigned, no rebalance is under way
and faust's table recovery finished (and the worker is live). A worker with no partition (more
workers than partitions) is alive and not ready.

``CT_WORKER_FAULT_AGENT_CRASHES`` (tests only) makes the agent raise :class:`InjectedAgentCrash`
on its first N records, to exercise the crash-loop verdict against a real broker.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from contest_telemetry.health import ProgressWatch, Verdict
from streams.faust_patches import recovery_completed
from streams.settings import WorkerSettings

__all__ = ["InjectedAgentCrash", "WorkerHealth"]


class InjectedAgentCrash(RuntimeError):
    """Raised by the agent on purpose (``CT_WORKER_FAULT_AGENT_CRASHES``, tests only)."""


class WorkerHealth:
    """The worker's :class:`~contest_telemetry.health.HealthSource`. ``app`` and ``assigned`` are
    set by :func:`streams.app.create_app`; until then the worker is live and "starting"."""

    def __init__(self, settings: WorkerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.progress = ProgressWatch(settings.health_stall_s, clock)
        self.loop_restarts = settings.crash_loop_restarts
        self.window_s = settings.crash_loop_window_s
        self._lock = threading.Lock()
        self._crashes: deque[float] = deque(maxlen=settings.crash_loop_restarts)  # bounded: the last N
        self.crashes_total = 0
        self.last_crash = ""
        self._faults_left = settings.fault_agent_crashes
        self.app: Any = None
        self.assigned: Callable[[], set[int] | None] = lambda: None

    # ------------------------------------------------------------------ fed by the app
    def agent_crashed(self, exc: BaseException) -> None:
        with self._lock:
            self._crashes.append(self.clock())
            self.crashes_total += 1
            self.last_crash = repr(exc)[:200]

    async def on_agent_error(self, agent: Any, exc: BaseException) -> None:
        """faust's ``on_error`` hook of the agent: called before faust restarts a crashed agent."""
        self.agent_crashed(exc)

    def inject(self, partition: int, offset: int) -> None:
        """Raise on the first ``CT_WORKER_FAULT_AGENT_CRASHES`` records (tests only)."""
        if self._faults_left > 0:
            self._faults_left -= 1
            raise InjectedAgentCrash(f"injected agent crash at partition {partition} offset {offset}")

    # ------------------------------------------------------------------ read by the exporter
    def crash_loop(self) -> Verdict | None:
        now = self.clock()
        with self._lock:
            crashes = list(self._crashes)
            total, last = self.crashes_total, self.last_crash
        if (
            len(crashes) >= self.loop_restarts
            and crashes[-1] - crashes[0] <= self.window_s
            and now - crashes[-1] < self.window_s
        ):
            return Verdict(
                False,
                f"the agent crashed {len(crashes)} times within {self.window_s:.0f} s and is restarting "
                f"in a loop: {last}",
                {
                    "agentCrashes": total,
                    "lastCrashSecondsAgo": round(now - crashes[-1], 1),
                    "crashLoopWindowSeconds": self.window_s,
                },
            )
        return None

    def liveness(self) -> Verdict:
        fatal = getattr(self.app, "fatal", None)
        if fatal is not None:
            return Verdict(False, f"stopping on a fatal error: {fatal}"[:300])
        failing = self.crash_loop() or self.progress.liveness()
        if failing is not None:
            return failing
        if self.app is None:
            return Verdict(True, "starting")
        return Verdict(True, "processing", {"agentCrashes": self.crashes_total})

    def readiness(self) -> Verdict:
        live = self.liveness()
        if not live.ok:
            return Verdict(False, live.reason, live.details)
        app = self.app
        if app is None:
            return Verdict(False, "starting")
        if getattr(app, "rebalancing", False):
            return Verdict(False, "rebalancing")
        in_recovery, completed = bool(getattr(app, "in_recovery", False)), recovery_completed(app)
        if in_recovery or not completed:
            return Verdict(
                False,
                "recovering tables from their changelog",
                {"inRecovery": in_recovery, "recoveryCompleted": completed},
            )
        assigned = self.assigned()
        if not assigned:
            return Verdict(
                False, "no input partition assigned (more workers than partitions?)", {"partitions": []}
            )
        return Verdict(True, "partitions assigned, tables recovered", {"partitions": sorted(assigned)})
