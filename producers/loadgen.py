"""A load generator that plays many hubs running contests with realistic latencies.

Arming and resolution latencies are lognormal. A share of hubs (``breach_share``) runs slow
enough to blow the budgets (arming p95 > 8 s, resolution p95 > 800 ms); a share of contests
(``multi_share``) has more than two participants. Event times come from a virtual clock that
advances at ``rate`` events/s; with ``pace=True`` publishing follows the wall clock, otherwise
events are published as fast as the publisher takes them (benchmarks, backfills).
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LoadGenerator", "LoadProfile", "Step"]

# (median ms, sigma) of the lognormal latencies. Healthy: arming p95 ~ 6.7 s, resolution p95
# ~ 680 ms, both under budget; breaching: arming p95 ~ 21 s, resolution p95 ~ 2.3 s.
_HEALTHY = {"arming": (2500.0, 0.6), "resolution": (300.0, 0.5)}
_BREACHING = {"arming": (8000.0, 0.6), "resolution": (1000.0, 0.5)}


@dataclass(frozen=True)
class LoadProfile:
    hubs: int = 20
    rate: float = 1000.0
    breach_share: float = 0.0
    multi_share: float = 0.1
    failure_share: float = 0.02
    expire_share: float = 0.03
    seed: int = 7

    def __post_init__(self) -> None:
        if self.hubs < 1:
            raise ValueError("hubs must be >= 1")
        if not self.rate > 0:
            raise ValueError("rate must be > 0 events/s")
        for name in ("breach_share", "multi_share", "failure_share", "expire_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(order=True)
class Step:
    """One event due at ``at_ms``; ``method`` names the publisher's ``record_*`` method."""

    at_ms: float
    seq: int
    method: str = field(compare=False)
    kwargs: dict[str, Any] = field(compare=False)


class LoadGenerator:
    """Produces time-ordered ``Step``s; ``run`` feeds them to a publisher."""

    def __init__(self, profile: LoadProfile, start_ms: float | None = None) -> None:
        self.profile = profile
        self.rng = random.Random(profile.seed)
        self.start_ms = time.time() * 1000.0 if start_ms is None else start_ms
        self.hubs = [f"hub-{i:04d}" for i in range(profile.hubs)]
        n_breach = round(profile.hubs * profile.breach_share)
        self.breaching = set(self.hubs[:n_breach])
        self._heap: list[Step] = []
        self._seq = 0
        self._contests = 0
        self.emitted = 0

    def _push(self, due_ms: float, method: str, **kwargs: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, Step(due_ms, self._seq, method, kwargs))

    def _latency(self, hub: str, stage: str) -> float:
        median, sigma = (_BREACHING if hub in self.breaching else _HEALTHY)[stage]
        return round(self.rng.lognormvariate(math.log(median), sigma), 1)

    def _start_contest(self, at_ms: float) -> None:
        p, rng = self.profile, self.rng
        self._contests += 1
        hub = rng.choice(self.hubs)
        room = f"room-{rng.randrange(50)}"
        key = f"contest-{self._contests}"
        contest_id = f"{hub}-c{self._contests}"
        multi = rng.random() < p.multi_share
        participants = rng.randint(3, 6) if multi else rng.randint(1, 2)
        capacity = max(participants, rng.choice((2, 4, 6))) if multi else 2
        tags = ["hub-pvp"] + (["consent-required"] if rng.random() < 0.2 else [])
        created = at_ms
        window = 30_000.0
        common = {"hub_id": hub, "room_id": room, "contest_key": key}
        self._push(
            created,
            "record_armed",
            **common,
            participant_count=1,
            participant_capacity=capacity,
            created_at=created,
            expires_at=created + window,
            label="Duel",
            move="strike",
            type="pvp",
            moderation_tags=tags,
            at_ms=created,
        )
        if rng.random() < p.expire_share:
            expired = created + window
            self._push(
                expired,
                "record_expired",
                **common,
                participant_count=1,
                participant_capacity=capacity,
                created_at=created,
                expires_at=created + window,
                expired_at=expired,
                at_ms=expired,
            )
            return
        started = created + self._latency(hub, "arming")
        self._push(
            started,
            "record_launched",
            **common,
            contest_id=contest_id,
            participant_count=participants,
            participant_capacity=capacity,
            created_at=created,
            started_at=started,
            label="Duel",
            move="strike",
            type="pvp",
            moderation_tags=tags,
            at_ms=started,
        )
        self._push(
            started + 2,
            "record_workflow_started",
            **common,
            contest_id=contest_id,
            workflow_id=f"wf-{contest_id}",
            run_id=None,
            at_ms=started + 2,
        )
        if rng.random() < p.failure_share:
            self._push(
                started + 50, "record_workflow_failed", **common, contest_id=contest_id, at_ms=started + 50
            )
            return
        resolved = started + self._latency(hub, "resolution")
        self._push(
            resolved,
            "record_resolved",
            **common,
            contest_id=contest_id,
            participant_count=participants,
            participant_capacity=capacity,
            outcome_tier=rng.choice(("decisive", "narrow", "draw")),
            created_at=created,
            started_at=started,
            resolved_at=resolved,
            moderation_tags=tags,
            at_ms=resolved,
        )

    def steps_until(self, until_ms: float) -> list[Step]:
        """Start contests up to ``until_ms`` (virtual time) and return the events due by then."""
        # About four events per contest: contests start at a quarter of the event rate.
        interval = 4000.0 / self.profile.rate
        next_start = self.start_ms + self._contests * interval
        while next_start <= until_ms:
            self._start_contest(next_start)
            next_start = self.start_ms + self._contests * interval
        due: list[Step] = []
        while self._heap and self._heap[0].at_ms <= until_ms:
            due.append(heapq.heappop(self._heap))
        self.emitted += len(due)
        return due

    def drain(self) -> list[Step]:
        """Every event still pending (contests in flight finish), in time order."""
        due = [heapq.heappop(self._heap) for _ in range(len(self._heap))]
        self.emitted += len(due)
        return due

    async def run(
        self,
        publisher: Any,
        *,
        duration_s: float | None = None,
        events: int | None = None,
        pace: bool = True,
        on_progress: Callable[[int], Awaitable[None] | None] | None = None,
        tick_ms: float = 50.0,
    ) -> int:
        """Publish until ``duration_s`` of event time passed or ``events`` were published; then
        finish contests in flight. Returns the number of events published (accepted or not)."""
        import asyncio

        if duration_s is None and events is None:
            raise ValueError("give duration_s or events")
        began = time.monotonic()
        virtual = self.start_ms
        end_ms = self.start_ms + duration_s * 1000.0 if duration_s is not None else math.inf
        published = 0
        while virtual < end_ms and (events is None or published < events):
            virtual = min(virtual + tick_ms, end_ms)
            for step in self.steps_until(virtual):
                await getattr(publisher, step.method)(**step.kwargs)
                published += 1
                if events is not None and published >= events:
                    break
            if on_progress is not None:
                result = on_progress(published)
                if result is not None:
                    await result
            if pace:
                ahead = (virtual - self.start_ms) / 1000.0 - (time.monotonic() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            else:
                await asyncio.sleep(0)  # let the publisher's sender run
        if events is None:
            published += await self._drain_into(publisher)
        return published

    async def _drain_into(self, publisher: Any, slice_ms: float = 250.0) -> int:
        """Finish contests in flight without pacing, but in event-time slices with a flush between
        them: one flush spanning many seconds would put one hub's later events ahead of another
        hub's earlier ones on a shared partition, which a stream processor sees as late events."""
        flush = getattr(publisher, "flush", None)
        steps = self.drain()
        published = 0
        start = 0
        while start < len(steps):
            limit = steps[start].at_ms + slice_ms
            end = start
            while end < len(steps) and steps[end].at_ms < limit:
                end += 1
            for step in steps[start:end]:
                await getattr(publisher, step.method)(**step.kwargs)
            published += end - start
            start = end
            if flush is not None:
                await flush()
        return published
