"""The lifecycle join of one hub's contests.

``armed`` has no ``contestId``: it is kept under ``(roomId, contestKey)`` until ``launched`` names
the contest; from then on the contest is kept under its ``contestId``. ``workflowStarted`` adds the
workflow ids; ``resolved``, ``workflowFailed`` and ``expired`` finish it and produce its
``contest.records`` value. Durations follow the contract (``contest_telemetry.schema.durations``)
when the producer did not send them. Contests (and armed entries) not seen for ``ttl_ms`` of event
time are dropped by :meth:`Lifecycle.expire` and reported with ``lifecycle: "ttl"``.

Window samples: the arming latency of a contest is sampled once, at ``launched`` when it is known
there, else at ``resolved``; the resolution latency at ``resolved``; the participant table takes
a contest when it finishes with a ``contestId`` (``resolved`` or ``workflowFailed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contest_telemetry.schema import arming_duration_ms, resolution_durations
from contest_telemetry.schema.events import ContestEventBase
from streams.records import build_record

__all__ = ["Effect", "Lifecycle"]

_P = "telemetry.contest."
ARMED, LAUNCHED, STARTED, FAILED, RESOLVED, EXPIRED = (
    _P + m for m in ("armed", "launched", "workflowStarted", "workflowFailed", "resolved", "expired")
)
_SEP = "\x1f"
_TIMES = (("createdAt", "created_at"), ("startedAt", "started_at"), ("expiresAt", "expires_at"))
_COPIED = (
    ("participantCount", "participant_count"),
    ("participantCapacity", "participant_capacity"),
    ("windowMs", "window_ms"),
    ("label", "label"),
    ("move", "move"),
    ("type", "type"),
    ("moderationTags", "moderation_tags"),
    ("sharedComplicationTags", "shared_complication_tags"),
)


@dataclass(slots=True)
class Effect:
    arming: float | None = None
    resolution: float | None = None
    finished: bool = False
    participants: int | None = None
    capacity: int | None = None
    record: dict[str, Any] | None = None


def _set(target: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        target[name] = value


class Lifecycle:
    __slots__ = ("armed", "contests")

    def __init__(self) -> None:
        self.armed: dict[str, dict[str, Any]] = {}
        self.contests: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.armed) + len(self.contests)

    # -- state ---------------------------------------------------------------------------------
    def to_state(self) -> list[Any]:
        return [self.armed, self.contests]

    @classmethod
    def from_state(cls, data: list[Any]) -> Lifecycle:
        out = cls()
        out.armed, out.contests = data[0], data[1]
        return out

    # -- events --------------------------------------------------------------------------------
    def apply(self, hub: str, ev: ContestEventBase, t: float) -> Effect:
        msg = ev.message
        room = ev.room_id
        key = f"{room}{_SEP}{ev.contest_key}"
        effect = Effect()
        if msg == ARMED:
            entry = self.armed.setdefault(key, {"roomId": room, "contestKey": ev.contest_key})
            self._take(entry, ev)
            entry["seen"] = t
            return effect
        contest_id: str | None = ev.__dict__.get("contest_id")
        if msg == EXPIRED:
            entry = (
                self.armed.pop(key) if key in self.armed else {"roomId": room, "contestKey": ev.contest_key}
            )
            self._take(entry, ev)
            fields = {"expiredAt": ev.expired_at, "armingDurationMs": getattr(ev, "arming_duration_ms", None)}
            if fields["armingDurationMs"] is None:
                fields["armingDurationMs"] = arming_duration_ms(entry.get("createdAt"), ev.expired_at)
            effect.record = self._record(hub, ev, "expired", entry, fields)
            return effect
        assert contest_id is not None
        contest = self.contests.get(contest_id)
        if contest is None:
            armed = self.armed.pop(key, None)
            contest = armed if armed is not None else {"roomId": room, "contestKey": ev.contest_key}
            contest["contestId"] = contest_id
            if msg not in (FAILED, RESOLVED):
                self.contests[contest_id] = contest
        contest["seen"] = t
        self._take(contest, ev)
        if msg == LAUNCHED:
            arming = ev.arming_duration_ms  # type: ignore[attr-defined]
            if arming is None:
                arming = arming_duration_ms(contest.get("createdAt"), contest.get("startedAt"))
            if arming is not None:
                contest["armingDurationMs"] = arming
                contest["ar"] = True
                effect.arming = arming
            return effect
        if msg == STARTED:
            _set(contest, "workflowId", ev.workflow_id)  # type: ignore[attr-defined]
            _set(contest, "runId", ev.run_id)  # type: ignore[attr-defined]
            return effect
        self.contests.pop(contest_id, None)
        effect.finished = True
        effect.participants = contest.get("participantCount")
        effect.capacity = contest.get("participantCapacity")
        if msg == RESOLVED:
            created, started, resolved = contest.get("createdAt"), contest.get("startedAt"), ev.resolved_at
            computed = resolution_durations(created, started, resolved)
            arming = ev.arming_duration_ms  # type: ignore[attr-defined]
            if arming is None:
                arming = contest.get("armingDurationMs")
            if arming is None:
                arming = computed.arming_ms
            resolution = ev.resolution_duration_ms  # type: ignore[attr-defined]
            if resolution is None:
                resolution = computed.resolution_ms
            if arming is not None and not contest.get("ar"):
                effect.arming = arming
            effect.resolution = resolution
            fields = {
                "armingDurationMs": arming,
                "resolutionDurationMs": resolution,
                "outcomeTier": ev.outcome_tier,  # type: ignore[attr-defined]
                "sharedComplicationCount": ev.shared_complication_count,  # type: ignore[attr-defined]
            }
            effect.record = self._record(hub, ev, "resolved", contest, fields)
        else:  # workflowFailed
            effect.record = self._record(hub, ev, "workflowFailed", contest, {"error": ev.error})  # type: ignore[attr-defined]
        return effect

    @staticmethod
    def _take(entry: dict[str, Any], ev: ContestEventBase) -> None:
        """Copy what the event knows into the lifecycle entry (a later number replaces an earlier)."""
        # Model fields straight from __dict__: getattr on a pydantic model's missing field is slow.
        d = ev.__dict__
        for name, attr in _TIMES:
            value = d.get(attr)
            if value is not None:
                entry[name] = value
        for name, attr in _COPIED:
            value = d.get(attr)
            if value is not None:
                entry[name] = value

    @staticmethod
    def _record(
        hub: str, ev: ContestEventBase, lifecycle: str, contest: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        fields.setdefault("resolvedAt", ev.resolved_at)
        fields.setdefault("expiredAt", ev.expired_at)
        fields = {k: v for k, v in fields.items() if v is not None}
        return build_record(
            message=ev.message,
            lifecycle=lifecycle,
            hub=hub,
            contest=contest,
            timestamp=ev.timestamp,
            level=ev.level,
            event_id=ev.event_id,
            fields=fields,
        )

    # -- TTL -----------------------------------------------------------------------------------
    def expire(self, hub: str, before_ms: float) -> list[dict[str, Any]]:
        """Drop entries last seen before ``before_ms`` (event time); return their ttl records."""
        out: list[dict[str, Any]] = []
        for table in (self.armed, self.contests):
            stale = [k for k, v in table.items() if v.get("seen", 0) < before_ms]
            for k in stale:
                entry = table.pop(k)
                seen = entry.get("seen", 0)
                out.append(
                    build_record(
                        message=EXPIRED,
                        lifecycle="ttl",
                        hub=hub,
                        contest=entry,
                        timestamp=_iso(seen),
                        level="info",
                        event_id=None,
                        fields={},
                    )
                )
        return out


def _iso(ms: float) -> str:
    from streams.windows import iso_ms

    return iso_ms(ms)
