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

from contest_telemetry.schema import (
    ARMED,
    EVENT_MESSAGES,
    EVENT_MODELS,
    EXPIRED,
    LAUNCHED,
    RESOLVED,
    WORKFLOW_FAILED,
    WORKFLOW_STARTED,
    arming_duration_ms,
    ms_to_iso,
    resolution_durations,
    short_type,
)
from streams.records import build_record

__all__ = ["NO_EFFECT", "Effect", "Lifecycle", "dropped_record"]

_SEP = "\x1f"
_SHORT = {m: short_type(m) for m in (EXPIRED, RESOLVED, WORKFLOW_FAILED)}  # a record's ``lifecycle``
_A, _C = "a" + _SEP, "c" + _SEP  # ident prefixes: armed entry, launched contest
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
    """Events are dicts as :func:`streams.fastdecode.decode_events` gives them (every field of the
    event's class under its wire name), or as an ingested record holds them (fields whose default
    is None may be absent, see :func:`streams.ingested.expand_events`): every field but
    ``message`` is read with ``get``.

    Entries are addressed by an *ident*: ``a<SEP><roomId><SEP><contestKey>`` for armed entries,
    ``c<SEP><contestId>`` for launched contests (:func:`ident_armed`, :func:`ident_contest`). Every
    ident an event creates, changes or removes is added to :attr:`touched`, so the state layer
    writes each changed entry once per record (or deletes it). At most ``max_open`` entries are
    kept: adding one more expires the oldest (by creation) into :attr:`evicted`."""

    __slots__ = ("armed", "contests", "evicted", "max_open", "touched")

    def __init__(self, max_open: int = 100_000) -> None:
        self.armed: dict[str, dict[str, Any]] = {}
        self.contests: dict[str, dict[str, Any]] = {}
        self.touched: set[str] = set()
        self.evicted: list[tuple[str, dict[str, Any]]] = []
        self.max_open = max_open

    def __len__(self) -> int:
        return len(self.armed) + len(self.contests)

    # -- entries by ident ------------------------------------------------------------------------
    def get(self, ident: str) -> dict[str, Any] | None:
        table = self.armed if ident[0] == "a" else self.contests
        return table.get(ident[2:])

    def put(self, ident: str, entry: dict[str, Any]) -> None:
        """Load an entry from state (no bound, not touched)."""
        (self.armed if ident[0] == "a" else self.contests)[ident[2:]] = entry

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return [(_A + k, v) for k, v in self.armed.items()] + [(_C + k, v) for k, v in self.contests.items()]

    def _admit(self) -> None:
        """Make room for one more entry (called before an insert)."""
        while len(self) >= self.max_open:
            oldest_a = next(iter(self.armed.items()), None)
            oldest_c = next(iter(self.contests.items()), None)
            if oldest_c is None or (
                oldest_a is not None and oldest_a[1].get("seen", 0) <= oldest_c[1].get("seen", 0)
            ):
                assert oldest_a is not None
                del self.armed[oldest_a[0]]
                ident = _A + oldest_a[0]
                self.evicted.append((ident, oldest_a[1]))
            else:
                del self.contests[oldest_c[0]]
                ident = _C + oldest_c[0]
                self.evicted.append((ident, oldest_c[1]))
            self.touched.discard(ident)

    # -- events --------------------------------------------------------------------------------
    def apply(self, hub: str, ev: dict[str, Any], t: float) -> Effect:
        msg = ev["message"]
        touched = self.touched
        if msg in (ARMED, EXPIRED):
            room = ev.get("roomId")
            contest_key = ev.get("contestKey")
            key = f"{room}{_SEP}{contest_key}"
            armed_entries = self.armed
            if msg == ARMED:
                entry = armed_entries.get(key)
                if entry is None:
                    self._admit()
                    entry = armed_entries[key] = {"roomId": room, "contestKey": contest_key}
                _take(entry, ev, msg)
                entry["seen"] = t
                touched.add(_A + key)
                return NO_EFFECT
            if key in armed_entries:
                entry = armed_entries.pop(key)
                touched.add(_A + key)
            else:
                entry = {"roomId": room, "contestKey": contest_key}
            _take(entry, ev, msg)
            expired_at = ev.get("expiredAt")
            fields = {"expiredAt": expired_at, "armingDurationMs": ev.get("armingDurationMs")}
            if fields["armingDurationMs"] is None:
                fields["armingDurationMs"] = arming_duration_ms(entry.get("createdAt"), expired_at)
            return Effect(record=self._record(hub, ev, _SHORT[EXPIRED], entry, fields))
        contest_id: str = ev.get("contestId")  # type: ignore[assignment]
        contests = self.contests
        contest = contests.get(contest_id)
        if contest is None:
            # First sight of the contest: its armed entry (by room and key) becomes it.
            room = ev.get("roomId")
            contest_key = ev.get("contestKey")
            key = f"{room}{_SEP}{contest_key}"
            armed = self.armed.pop(key, None)
            if armed is not None:
                touched.add(_A + key)
            contest = armed if armed is not None else {"roomId": room, "contestKey": contest_key}
            contest["contestId"] = contest_id
            if msg != WORKFLOW_FAILED and msg != RESOLVED:
                if armed is None:
                    self._admit()
                contests[contest_id] = contest
        touched.add(_C + contest_id)
        contest["seen"] = t
        _take(contest, ev, msg)
        if msg == LAUNCHED:
            arming = ev.get("armingDurationMs")
            if arming is None:
                arming = arming_duration_ms(contest.get("createdAt"), contest.get("startedAt"))
            if arming is not None:
                contest["armingDurationMs"] = arming
                contest["ar"] = True
                return Effect(arming=arming)
            return NO_EFFECT
        if msg == WORKFLOW_STARTED:
            _set(contest, "workflowId", ev.get("workflowId"))
            _set(contest, "runId", ev.get("runId"))
            return NO_EFFECT
        contests.pop(contest_id, None)
        effect = Effect(
            finished=True,
            participants=contest.get("participantCount"),
            capacity=contest.get("participantCapacity"),
        )
        if msg == RESOLVED:
            created, started, resolved = (
                contest.get("createdAt"),
                contest.get("startedAt"),
                ev.get("resolvedAt"),
            )
            computed = resolution_durations(created, started, resolved)
            arming = ev.get("armingDurationMs")
            if arming is None:
                arming = contest.get("armingDurationMs")
            if arming is None:
                arming = computed.arming_ms
            resolution = ev.get("resolutionDurationMs")
            if resolution is None:
                resolution = computed.resolution_ms
            if arming is not None and not contest.get("ar"):
                effect.arming = arming
            effect.resolution = resolution
            fields = {
                "armingDurationMs": arming,
                "resolutionDurationMs": resolution,
                "outcomeTier": ev.get("outcomeTier"),
                "sharedComplicationCount": ev.get("sharedComplicationCount"),
            }
            effect.record = self._record(hub, ev, _SHORT[RESOLVED], contest, fields)
        else:  # workflowFailed
            effect.record = self._record(
                hub, ev, _SHORT[WORKFLOW_FAILED], contest, {"error": ev.get("error")}
            )
        return effect

    @staticmethod
    def _record(
        hub: str, ev: dict[str, Any], lifecycle: str, contest: dict[str, Any], fields: dict[str, Any]
    ) -> dict[str, Any]:
        fields.setdefault("resolvedAt", ev.get("resolvedAt"))
        fields.setdefault("expiredAt", ev.get("expiredAt"))
        fields = {k: v for k, v in fields.items() if v is not None}
        return build_record(
            message=ev["message"],
            lifecycle=lifecycle,
            hub=hub,
            contest=contest,
            timestamp=ev.get("timestamp"),
            level=ev["level"],  # filled in when absent (expand_events)
            event_id=ev.get("eventId"),
            fields=fields,
        )

    # -- TTL -----------------------------------------------------------------------------------
    def expire(self, hub: str, before_ms: float) -> list[tuple[str, dict[str, Any]]]:
        """Drop entries last seen before ``before_ms`` (event time); return ``(ident, record)`` of
        each, its ``lifecycle: "ttl"`` record."""
        out: list[tuple[str, dict[str, Any]]] = []
        for prefix, table in ((_A, self.armed), (_C, self.contests)):
            stale = [k for k, v in table.items() if v.get("seen", 0) < before_ms]
            for k in stale:
                out.append((prefix + k, dropped_record(hub, table.pop(k), "ttl")))
        return out


def dropped_record(hub: str, entry: dict[str, Any], lifecycle: str) -> dict[str, Any]:
    """The ``contest.records`` value of an entry dropped without finishing (ttl, overflow)."""
    return build_record(
        message=EXPIRED,
        lifecycle=lifecycle,
        hub=hub,
        contest=entry,
        timestamp=ms_to_iso(entry.get("seen", 0)),
        level="info",
        event_id=None,
        fields={},
    )


def _taken(message: str) -> tuple[str, ...]:
    """The fields of ``_TAKEN`` that events of ``message`` have (the others are always None)."""
    cls = EVENT_MODELS.get(message)
    if cls is None:
        return _TAKEN
    aliases = {info.alias or name for name, info in cls.model_fields.items()}
    return tuple(name for name in _TAKEN if name in aliases)


_TAKEN_BY_MESSAGE = {m: _taken(m) for m in EVENT_MESSAGES}


def _take(entry: dict[str, Any], ev: dict[str, Any], message: str) -> None:
    """Copy what the event knows into the lifecycle entry (a later number replaces an earlier)."""
    get = ev.get
    for name in _TAKEN_BY_MESSAGE.get(message, _TAKEN):
        value = get(name)
        if value is not None:
            entry[name] = value
