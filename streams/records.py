"""The ``contest.records`` value: one record per finished contest, contract-shaped.

The record carries the finishing event's ``message`` (``telemetry.contest.resolved``,
``.workflowFailed`` or ``.expired``; a contest dropped by the lifecycle TTL is reported as
``telemetry.contest.expired`` with ``lifecycle: "ttl"``), so the monitor reads the topic unchanged,
plus the joined lifecycle: ids, raw times, both durations, participants, outcome, tags, workflow.
``eventId`` is deterministic (``record:<finishing eventId>`` or derived from hub, contest and
time), so a replay that re-emits a record emits an identical one that consumers can deduplicate.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RECORD_FIELDS", "build_record"]

RECORD_FIELDS = (
    "message",
    "timestamp",
    "level",
    "hubId",
    "roomId",
    "contestId",
    "contestKey",
    "armingDurationMs",
    "resolutionDurationMs",
    "participantCount",
    "participantCapacity",
    "outcomeTier",
    "sharedComplicationCount",
    "error",
    "workflowId",
    "runId",
    "moderationTags",
    "sharedComplicationTags",
    "label",
    "move",
    "type",
    "windowMs",
    "createdAt",
    "startedAt",
    "resolvedAt",
    "expiresAt",
    "expiredAt",
    "eventId",
    "lifecycle",
)
_BODY = RECORD_FIELDS[4:-2]


def build_record(
    *,
    message: str,
    lifecycle: str,
    hub: str,
    contest: dict[str, Any],
    timestamp: str | None,
    level: str,
    event_id: str | None,
    fields: dict[str, Any],
) -> dict[str, Any]:
    """``contest`` is the joined lifecycle state; ``fields`` what the finishing event adds."""
    out: dict[str, Any] = {
        "message": message,
        "timestamp": timestamp,
        "level": level,
        "hubId": hub,
    }
    joined = {**contest, **fields}  # what the finishing event adds wins
    out.update(zip(_BODY, map(joined.get, _BODY), strict=True))
    if event_id:
        out["eventId"] = f"record:{event_id}"
    else:
        ident = contest.get("contestId") or f"{contest.get('roomId')}/{contest.get('contestKey')}"
        out["eventId"] = f"record:{lifecycle}:{hub}:{ident}:{timestamp}"
    out["lifecycle"] = lifecycle
    return out
