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

import typing
from dataclasses import dataclass
from typing import Any

from contest_telemetry.schema import arming_duration_ms, resolution_durations
from streams.records import build_record

__all__ = ["NO_EFFECT", "Effect", "Lifecycle"]

_P = "telemetry.contest."
ARMED, LAUNCHED, STARTED, FAILED, RESOLVED, EXPIRED = (
    _P + m for m in ("armed", "launched", "workflowStarted", "workflowFailed", "resolved", "expired")
)
_SEP = "\x1f"
# What a lifecycle entry takes from an event, in this order (a later number replaces an earlier).
_TAKEN = (
    "createdAt",
    "startedAt",
    "expiresAt",
    "participantCount",
    "participantCapacity",
    "windowMs",
    "label",
    "move",
    "type",
    "moderationTags",
    "sharedComplicationTags",
)


@dataclass(slots=True)
class Effect:
    arming: float | None = None
    resolution: float | None = None
    finished: bool = False
    participants: int | None = None
    capacity: int | None = None
    record: dict[str, Any] | None = None


NO_EFFECT = Effect()
"""What most events return (shared: never modify it)."""


def _set(target: dict[str, Any], name: str, value: Any) -> None:
    if value is not None:
        target[name] = value


class Lifecycle:
    """Events are dicts as :func:`streams.fastdecode.decode_events` gives them: every field of the
    event's class under its wire name (absent fields of other classes read as None)."""

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
    def apply(self, hub: str, ev: dict[str, Any], t: float) -> Effect:
        msg = ev["message"]
        room = ev["roomId"]
        contest_key = ev["contestKey"]
        key = f"{room}{_SEP}{contest_key}"
        if msg == ARMED:
            entry = self.armed.get(key)
            if entry is None:
                entry = self.armed[key] = {"roomId": room, "contestKey": contest_key}
            _take(entry, ev)
            entry["seen"] = t
            return NO_EFFECT
        if msg == EXPIRED:
            entry = self.armed.pop(key) if key in self.armed else {"roomId": room, "contestKey": contest_key}
            _take(entry, ev)
            expired_at = ev["expiredAt"]
            fields = {"expiredAt": expired_at, "armingDurationMs": ev.get("armingDurationMs")}
            if fields["armingDurationMs"] is None:
                fields["armingDurationMs"] = arming_duration_ms(entry.get("createdAt"), expired_at)
            return Effect(record=self._record(hub, ev, "expired", entry, fields))
        contest_id: str = ev["contestId"]
        contest = self.contests.get(contest_id)
        if contest is None:
            armed = self.armed.pop(key, None)
            contest = armed if armed is not None else {"roomId": room, "contestKey": contest_key}
            contest["contestId"] = contest_id
            if msg != FAILED and msg != RESOLVED:
                self.contests[contest_id] = contest
        contest["seen"] = t
        _take(contest, ev)
        if msg == LAUNCHED:
            arming = ev["armingDurationMs"]
            if arming is None:
                arming = arming_duration_ms(contest.get("createdAt"), contest.get("startedAt"))
            if arming is not None:
                contest["armingDurationMs"] = arming
                contest["ar"] = True
                return Effect(arming=arming)
            return NO_EFFECT
        if msg == STARTED:
            _set(contest, "workflowId", ev["workflowId"])
            _set(contest, "runId", ev["runId"])
            return NO_EFFECT
        self.contests.pop(contest_id, None)
        effect = Effect(
            finished=True,
            participants=contest.get("participantCount"),
            capacity=contest.get("participantCapacity"),
        )
        if msg == RESOLVED:
            created, started, resolved = contest.get("createdAt"), contest.get("startedAt"), ev["resolvedAt"]
            computed = resolution_durations(created, started, resolved)
            arming = ev["armingDurationMs"]
            if arming is None:
                arming = contest.get("armingDurationMs")
            if arming is None:
                arming = computed.arming_ms
            resolution = ev["resolutionDurationMs"]
            if resolution is None:
                resolution = computed.resolution_ms
            if arming is not None and not contest.get("ar"):
                effect.arming = arming
            effect.resolution = resolution
            fields = {
                "armingDurationMs": arming,
                "resolutionDurationMs": resolution,
                "outcomeTier": ev["outcomeTier"],
                "sharedComplicationCount": ev["sharedComplicationCount"],
            }
            effect.record = self._record(hub, ev, "resolved", contest, fields)
        else:  # workflowFailed
            effect.record = self._record(hub, ev, "workflowFailed", contest, {"error": ev["error"]})
        return effect

    @staticmethod
    def _record(
        hub: str, ev: dict[str, Any], lifecycle: str, contest: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        fields.setdefault("resolvedAt", ev["resolvedAt"])
        fields.setdefault("expiredAt", ev["expiredAt"])
        fields = {k: v for k, v in fields.items() if v is not None}
        return build_record(
            message=ev["message"],
            lifecycle=lifecycle,
            hub=hub,
            contest=contest,
            timestamp=ev["timestamp"],
            level=ev["level"],
            event_id=ev["eventId"],
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


def _taken(message: str) -> tuple[str, ...]:
    """The fields of ``_TAKEN`` that events of ``message`` have (the others are always None)."""
    from contest_telemetry.schema.events import AnyContestEvent

    union = typing.get_args(AnyContestEvent)[0]
    for cls in typing.get_args(union):
        if typing.get_args(cls.model_fields["message"].annotation) == (message,):
            aliases = {info.alias or name for name, info in cls.model_fields.items()}
            return tuple(name for name in _TAKEN if name in aliases)
    return _TAKEN


_TAKEN_BY_MESSAGE = {m: _taken(m) for m in (ARMED, LAUNCHED, STARTED, FAILED, RESOLVED, EXPIRED)}


def _take(entry: dict[str, Any], ev: dict[str, Any]) -> None:
    """Copy what the event knows into the lifecycle entry (a later number replaces an earlier)."""
    get = ev.get
    for name in _TAKEN_BY_MESSAGE.get(ev["message"], _TAKEN):
        value = get(name)
        if value is not None:
            entry[name] = value


def _iso(ms: float) -> str:
    from streams.windows import iso_ms

    return iso_ms(ms)
