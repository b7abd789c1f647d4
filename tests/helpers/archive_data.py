"""Archive test data: contract events with unique eventIds, and reading an archive back."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["archived_lines", "event", "event_ids", "record_value"]


def event(n: int, hub: str = "hub-1", *, timestamp: str = "2024-05-01T10:00:00.000Z") -> dict[str, Any]:
    """A valid ``launched`` event with ``eventId`` ``e-<n>``."""
    return {
        "message": "telemetry.contest.launched",
        "timestamp": timestamp,
        "level": "info",
        "hubId": hub,
        "roomId": f"room-{n % 7}",
        "contestId": f"c-{n}",
        "contestKey": f"k-{n}",
        "participantCount": 2,
        "participantCapacity": 4,
        "armingDurationMs": 100 + n,
        "eventId": f"e-{n}",
    }


def record_value(n: int, hub: str = "hub-1") -> dict[str, Any]:
    """A contract-shaped contest record as the stream worker writes them."""
    return {
        "message": "telemetry.contest.record",
        "timestamp": "2024-05-01T11:00:00.000Z",
        "level": "info",
        "hubId": hub,
        "contestId": f"c-{n}",
        "eventId": f"r-{n}",
        "lifecycle": "resolved",
        "armingDurationMs": 10,
        "resolutionDurationMs": 20,
    }


def archived_lines(root: Path | str) -> list[dict[str, Any]]:
    """Every line of every file the manifest lists, decoded, with ``_topic`` added (an
    ``s3://`` root is read through sinks/archive/reader.py)."""
    out: list[dict[str, Any]] = []
    if isinstance(root, str):
        from sinks.archive.reader import open_reader

        reader = open_reader(root)
        for entry in reader.chunks():
            for line in reader.lines(entry):
                obj = json.loads(line)
                obj["_topic"] = entry.topic
                out.append(obj)
        return out
    for raw in (root / "manifest.jsonl").read_text().splitlines():
        entry = json.loads(raw)
        with gzip.open(root / entry["file"], "rt", encoding="utf-8") as handle:
            for line in handle:
                obj = json.loads(line)
                obj["_topic"] = entry["topic"]
                out.append(obj)
    return out


def event_ids(root: Path | str) -> Counter[str]:
    return Counter(str(obj.get("eventId")) for obj in archived_lines(root))
