"""The summary document, case by case, against the behaviour the contract describes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sinks.monitor.summary import SummaryBuilder, parse_event_line, percentile

LAUNCHED = "telemetry.contest.launched"
RESOLVED = "telemetry.contest.resolved"
FAILED = "telemetry.contest.workflowFailed"
STARTED = "telemetry.contest.workflowStarted"


def summarise_lines(*lines: str | dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    builder = SummaryBuilder(**kwargs)
    builder.feed_lines(
        (line if isinstance(line, str) else json.dumps(line)).encode() + b"\n" for line in lines
    )
    return builder.build()


def event(message: str, contest_id: Any = "c1", **fields: Any) -> dict[str, Any]:
    return {"message": message, "contestId": contest_id, "hubId": "hub-a", "roomId": "room-1", **fields}


EMPTY = {
    "totals": {"contestsObserved": 0, "resolvedContests": 0, "workflowFailures": 0},
    "durations": {
        "arming": {
            "samples": 0,
            "missing": 0,
            "p50": None,
            "p95": None,
            "max": None,
            "budget": 8000,
            "breached": False,
        },
        "resolution": {
            "samples": 0,
            "missing": 0,
            "p50": None,
            "p95": None,
            "max": None,
            "budget": 800,
            "breached": False,
        },
    },
    "participants": {
        "samples": 0,
        "average": None,
        "max": None,
        "multiActorContests": 0,
        "capacityOverTwo": 0,
    },
    "raw": {"contests": [], "workflowFailures": []},
}


def test_empty_input() -> None:
    assert summarise_lines() == EMPTY


def test_blank_junk_and_non_object_lines_are_skipped() -> None:
    lines = ["", "   ", "not json", "{broken", "[1, 2]", "42", '"text"', "null", '{"a": NaN}']
    assert summarise_lines(*lines) == EMPTY


def test_events_without_contest_id_and_foreign_messages_are_ignored() -> None:
    lines = [
        {"message": LAUNCHED, "hubId": "h", "armingDurationMs": 5},
        {"message": LAUNCHED, "contestId": "", "armingDurationMs": 5},
        {"message": LAUNCHED, "contestId": None, "armingDurationMs": 5},
        {"message": LAUNCHED, "contestId": 0, "armingDurationMs": 5},
        {"message": "telemetry.other", "contestId": "c9"},
        {"contestId": "c9", "armingDurationMs": 5},
        {"message": 7, "contestId": "c9"},
    ]
    assert summarise_lines(*lines) == EMPTY


def test_one_sample() -> None:
    summary = summarise_lines(
        event(LAUNCHED, armingDurationMs=240, participantCount=2, participantCapacity=2),
        event(RESOLVED, resolutionDurationMs=580, outcomeTier="clear"),
    )
    assert summary == {
        "totals": {"contestsObserved": 1, "resolvedContests": 1, "workflowFailures": 0},
        "durations": {
            "arming": {
                "samples": 1,
                "missing": 0,
                "p50": 240,
                "p95": 240,
                "max": 240,
                "budget": 8000,
                "breached": False,
            },
            "resolution": {
                "samples": 1,
                "missing": 0,
                "p50": 580,
                "p95": 580,
                "max": 580,
                "budget": 800,
                "breached": False,
            },
        },
        "participants": {"samples": 1, "average": 2, "max": 2, "multiActorContests": 0, "capacityOverTwo": 0},
        "raw": {
            "contests": [
                {
                    "contestId": "c1",
                    "hubId": "hub-a",
                    "roomId": "room-1",
                    "armingDurationMs": 240,
                    "resolutionDurationMs": 580,
                    "participantCount": 2,
                    "participantCapacity": 2,
                    "outcomes": ["clear"],
                }
            ],
            "workflowFailures": [],
        },
    }


def test_missing_durations_count_as_missing_and_unresolved() -> None:
    summary = summarise_lines(
        event(LAUNCHED, "a", armingDurationMs=100),
        event(RESOLVED, "a", resolutionDurationMs=300),
        event(LAUNCHED, "b"),  # launched, never resolved, no arming either
        event(STARTED, "c", workflowId="w"),  # workflowStarted still opens a contest
    )
    assert summary["totals"] == {"contestsObserved": 3, "resolvedContests": 1, "workflowFailures": 0}
    assert summary["durations"]["arming"]["samples"] == 1
    assert summary["durations"]["arming"]["missing"] == 2
    assert summary["durations"]["resolution"]["missing"] == 2
    assert [c["contestId"] for c in summary["raw"]["contests"]] == ["a", "b", "c"]
    assert summary["participants"]["samples"] == 0


@pytest.mark.parametrize("bad", ["240", True, False, None, -1, -0.5, [240], {"v": 240}, 1e400, "NaN"])
def test_non_numbers_nan_and_negatives_are_missing(bad: Any) -> None:
    line = json.dumps(
        event(
            LAUNCHED,
            armingDurationMs=bad,
            participantCount=bad,
            participantCapacity=bad,
        )
    ).replace("Infinity", "1e400")
    summary = summarise_lines(line, event(RESOLVED, resolutionDurationMs=bad))
    contest = summary["raw"]["contests"][0]
    assert contest["armingDurationMs"] is None
    assert contest["resolutionDurationMs"] is None
    assert contest["participantCount"] is None
    assert contest["participantCapacity"] is None
    assert summary["totals"]["resolvedContests"] == 0


def test_zero_is_a_valid_duration() -> None:
    summary = summarise_lines(event(RESOLVED, armingDurationMs=0, resolutionDurationMs=-0.0))
    assert summary["durations"]["arming"]["p95"] == 0
    assert summary["durations"]["resolution"]["samples"] == 1


def test_duplicate_resolves_append_outcomes_and_later_numbers_replace() -> None:
    summary = summarise_lines(
        event(LAUNCHED, armingDurationMs=100, participantCount=2, participantCapacity=4),
        event(RESOLVED, armingDurationMs=150, resolutionDurationMs=500, outcomeTier="win"),
        event(RESOLVED, resolutionDurationMs="oops", participantCount=3, outcomeTier=None),
        event(RESOLVED, resolutionDurationMs=700, outcomeTier="loss", hubId="other-hub"),
        event(LAUNCHED, participantCount=None),
    )
    assert summary["raw"]["contests"] == [
        {
            "contestId": "c1",
            "hubId": "hub-a",  # from the first event only
            "roomId": "room-1",
            "armingDurationMs": 150,
            "resolutionDurationMs": 700,
            "participantCount": 3,
            "participantCapacity": 4,
            "outcomes": ["win", "loss"],
        }
    ]
    assert summary["participants"]["multiActorContests"] == 1
    assert summary["participants"]["capacityOverTwo"] == 1


def test_workflow_failures_are_counted_apart_and_open_no_contest() -> None:
    failure = {
        "message": FAILED,
        "contestId": "c7",
        "hubId": "h",
        "error": "workflow_failed",
        "level": "error",
    }
    anonymous = {"message": FAILED, "error": "boom"}
    summary = summarise_lines(failure, anonymous)
    assert summary["totals"] == {"contestsObserved": 0, "resolvedContests": 0, "workflowFailures": 2}
    assert summary["raw"] == {"contests": [], "workflowFailures": [failure, anonymous]}


def test_contest_ids_are_keyed_like_a_javascript_map() -> None:
    summary = summarise_lines(
        event(LAUNCHED, "1"), event(LAUNCHED, 1), event(LAUNCHED, 1.0), event(LAUNCHED, True)
    )
    assert [c["contestId"] for c in summary["raw"]["contests"]] == ["1", 1, True]


def test_falsy_hub_and_room_become_null() -> None:
    summary = summarise_lines({"message": LAUNCHED, "contestId": "c", "hubId": "", "roomId": 0})
    assert summary["raw"]["contests"][0]["hubId"] is None
    assert summary["raw"]["contests"][0]["roomId"] is None


def test_breach_and_thresholds() -> None:
    builder = SummaryBuilder()
    builder.feed_lines(
        json.dumps(event(RESOLVED, f"c{i}", armingDurationMs=9000, resolutionDurationMs=800)).encode()
        for i in range(3)
    )
    summary = builder.build()
    assert summary["durations"]["arming"]["breached"] is True
    assert summary["durations"]["resolution"]["breached"] is False  # p95 == budget is within it
    relaxed = builder.build(arming_budget=9000, resolution_budget=799.5)
    assert relaxed["durations"]["arming"]["breached"] is False
    assert relaxed["durations"]["resolution"]["breached"] is True


def test_average_and_participants() -> None:
    counts = [1, 2, 3, 3]
    summary = summarise_lines(*(event(LAUNCHED, f"c{i}", participantCount=n) for i, n in enumerate(counts)))
    assert summary["participants"] == {
        "samples": 4,
        "average": 2.25,
        "max": 3,
        "multiActorContests": 2,
        "capacityOverTwo": 0,
    }


@pytest.mark.parametrize(
    ("values", "p50", "p95"),
    [
        ([], None, None),
        ([7.5], 7.5, 7.5),
        ([1, 2], 1, 2),
        (list(range(1, 21)), 10, 19),
        (list(range(1, 101)), 50, 95),
    ],
)
def test_nearest_rank_percentile(values: list[float], p50: float | None, p95: float | None) -> None:
    assert percentile(values, 50) == p50
    assert percentile(values, 95) == p95


def test_hub_filter_and_time_window() -> None:
    lines = [
        event(RESOLVED, "a", timestamp="2025-11-04T08:00:00Z", resolutionDurationMs=1),
        event(RESOLVED, "b", timestamp="2025-11-04T09:00:00.500Z", resolutionDurationMs=2, hubId="hub-b"),
        event(RESOLVED, "c", timestamp="2025-11-04T10:00:00+00:00", resolutionDurationMs=3),
        event(RESOLVED, "d", resolutionDurationMs=4),  # no timestamp: unplaceable in a window
        event(RESOLVED, "e", timestamp=1762250400000, resolutionDurationMs=5),  # 2025-11-04T10:00Z
    ]
    assert [c["contestId"] for c in summarise_lines(*lines, hubs=["hub-b"])["raw"]["contests"]] == ["b"]
    window = summarise_lines(*lines, since_ms=1762243200000.0, until_ms=1762250400000.0)  # 08:00 to 10:00
    assert [c["contestId"] for c in window["raw"]["contests"]] == ["a", "b"]


def test_by_hub_breakdown() -> None:
    builder = SummaryBuilder()
    builder.feed_lines(
        json.dumps(line).encode()
        for line in [
            event(RESOLVED, "a", resolutionDurationMs=100),
            event(RESOLVED, "b", resolutionDurationMs=900, hubId="hub-b"),
            {"message": FAILED, "contestId": "x", "hubId": "hub-c"},
        ]
    )
    hubs = builder.by_hub()
    assert list(hubs) == ["hub-a", "hub-b", "hub-c"]
    assert hubs["hub-b"]["durations"]["resolution"]["breached"] is True
    assert hubs["hub-c"]["totals"] == {"contestsObserved": 0, "resolvedContests": 0, "workflowFailures": 1}


def test_lines_orjson_refuses_still_parse_like_json_parse() -> None:
    assert parse_event_line(b'{"a": 1e400}') == {"a": float("inf")}
    assert parse_event_line(b'{"a": "\\ud800"}') == {"a": "\ud800"}
    assert parse_event_line(b'{"a": "\xff"}') == {"a": "\ufffd"}
    assert parse_event_line(b'{"a": NaN}') is None
    assert parse_event_line(b'{"a": Infinity}') is None
