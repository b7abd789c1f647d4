"""One example of every contract event, exactly as hubs send them today."""

from __future__ import annotations

from typing import Any

TS = "2025-11-04T08:05:00.000Z"

ARMED: dict[str, Any] = {
    "message": "telemetry.contest.armed",
    "timestamp": TS,
    "level": "info",
    "hubId": "hub-1",
    "roomId": "room-7",
    "contestKey": "duel:a:b",
    "participantCount": 1,
    "participantCapacity": 2,
    "windowMs": 15000,
    "label": "Duel",
    "move": "strike",
    "type": "pvp",
    "moderationTags": ["hub-pvp", "consent-required"],
    "sharedComplicationTags": [],
    "createdAt": 1762243485000,
    "expiresAt": 1762243500000,
}
LAUNCHED: dict[str, Any] = {
    "message": "telemetry.contest.launched",
    "timestamp": TS,
    "level": "info",
    "hubId": "hub-1",
    "roomId": "room-7",
    "contestId": "c-1",
    "contestKey": "duel:a:b",
    "participantCount": 2,
    "participantCapacity": 2,
    "armingDurationMs": 240,
    "label": "Duel",
    "move": "strike",
    "type": "pvp",
}
WORKFLOW_STARTED: dict[str, Any] = {
    "message": "telemetry.contest.workflowStarted",
    "timestamp": TS,
    "level": "info",
    "hubId": "hub-1",
    "roomId": "room-7",
    "contestId": "c-1",
    "contestKey": "duel:a:b",
    "workflowId": "wf-1",
    "runId": None,
}
WORKFLOW_FAILED: dict[str, Any] = {
    "message": "telemetry.contest.workflowFailed",
    "timestamp": TS,
    "level": "error",
    "hubId": "hub-1",
    "roomId": "room-7",
    "contestId": "c-2",
    "contestKey": "duel:c:d",
    "error": "workflow_failed",
}
RESOLVED: dict[str, Any] = {
    "message": "telemetry.contest.resolved",
    "timestamp": TS,
    "level": "info",
    "hubId": "hub-1",
    "roomId": "room-7",
    "contestId": "c-1",
    "contestKey": "duel:a:b",
    "participantCount": 2,
    "participantCapacity": 2,
    "outcomeTier": "decisive",
    "sharedComplicationCount": 0,
    "armingDurationMs": 240,
    "resolutionDurationMs": 580,
    "moderationTags": ["hub-pvp"],
}
EXPIRED: dict[str, Any] = {
    "message": "telemetry.contest.expired",
    "timestamp": TS,
    "level": "info",
    "hubId": "hub-1",
    "roomId": "room-9",
    "contestKey": "duel:e:f",
    "participantCount": 1,
    "participantCapacity": None,
    "label": None,
    "move": None,
    "type": None,
    "expiredAt": 1762243500000,
    "windowMs": 15000,
    "armingDurationMs": 15000,
}
ALL = [ARMED, LAUNCHED, WORKFLOW_STARTED, WORKFLOW_FAILED, RESOLVED, EXPIRED]
