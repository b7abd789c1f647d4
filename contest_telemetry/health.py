"""What ``/healthz`` (liveness) and ``/readyz`` (readiness) answer, for any process that serves an
exporter (the worker, the archiver).

A :class:`HealthSource` gives a :class:`Verdict` for each; the exporter's threads ask at request
time and answer 200 or 503 with a small JSON body::

    {"status": "ok" | "fail", "check": "live" | "ready", "reason": "...", ...details}

Liveness means "this process can do its job": a process that is alive but does nothing (an agent
restarting in a loop, records waiting and none applied) must fail it, so an orchestrator restarts
it. Readiness means "it is doing its job now" (partitions assigned, state recovered); an
orchestrator only holds traffic and rollouts on it, it never restarts for it.

:class:`ProgressWatch` is the shared "records wait and none is applied" clock: the owner's event
loop feeds it observations (and its own heartbeat), the exporter's threads read it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

__all__ = ["AlwaysHealthy", "HealthSource", "ProgressWatch", "Verdict"]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def body(self, check: str) -> bytes:
        """The JSON body (one line) of a ``/healthz`` (check ``live``) or ``/readyz`` (``ready``) answer."""
        return (
            orjson.dumps(
                {"status": "ok" if self.ok else "fail", "check": check, "reason": self.reason, **self.details}
            )
            + b"\n"
        )


class HealthSource(Protocol):
    def liveness(self) -> Verdict: ...

    def readiness(self) -> Verdict: ...


class AlwaysHealthy:
    """For an exporter with nothing to watch (tests, tools): the server answers, that is all."""

    def liveness(self) -> Verdict:
        return Verdict(True, "serving")

    def readiness(self) -> Verdict:
        return Verdict(True, "serving")


class ProgressWatch:
    """Per key (a partition), since when records have waited while its position did not move, and
    when the owner's loop last reported at all (its heartbeat).

    ``observe`` and ``beat`` are called from the owner's event loop, ``stalled`` and ``silent_for``
    from the exporter's threads (hence the lock; every call is O(partitions))."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self.clock = clock
        self._lock = threading.Lock()
        self._since: dict[Hashable, tuple[int, float]] = {}  # key -> (position, waiting since)
        self._last_beat: float | None = None

    def beat(self) -> None:
        with self._lock:
            self._last_beat = self.clock()

    def observe(self, key: Hashable, position: int, waiting: bool) -> None:
        """One look at ``key``: its position (the next offset to apply) and whether records wait."""
        now = self.clock()
        with self._lock:
            self._last_beat = now
            seen = self._since.get(key)
            if not waiting:
                self._since.pop(key, None)
            elif seen is None or seen[0] != position:
                self._since[key] = (position, now)

    def forget(self, keep: set[Any] | None = None) -> None:
        """Drop keys not in ``keep`` (all when None): a rebalance moved them away."""
        with self._lock:
            if keep is None:
                self._since.clear()
            else:
                for key in [k for k in self._since if k not in keep]:
                    del self._since[key]

    def stalled(self) -> dict[str, float]:
        """``{str(key): seconds}`` of keys with records waiting and no progress for ``stall_s``."""
        now = self.clock()
        with self._lock:
            return {
                str(key): round(now - since, 1)
                for key, (_, since) in self._since.items()
                if now - since >= self.stall_s
            }

    def silent_for(self) -> float | None:
        """Seconds since the last ``beat``/``observe`` (None: never)."""
        with self._lock:
            return None if self._last_beat is None else self.clock() - self._last_beat

    def liveness(self) -> Verdict | None:
        """A failing verdict when the loop is silent or a key stalled for ``stall_s``, else None."""
        silent = self.silent_for()
        if silent is not None and silent >= self.stall_s:
            return Verdict(
                False,
                f"the event loop reported nothing for {silent:.0f} s (blocked?)",
                {"silentSeconds": round(silent, 1), "stallSeconds": self.stall_s},
            )
        stalled = self.stalled()
        if stalled:
            return Verdict(
                False,
                f"records wait and the read position did not move for {max(stalled.values()):.0f} s",
                {"stalledPartitions": stalled, "stallSeconds": self.stall_s},
            )
        return None
