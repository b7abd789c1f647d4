"""Renderings: the contract's text byte for byte, and JSON as JSON.stringify(x, null, 2) prints it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console

from sinks.monitor.render import js_number, js_to_fixed, render_json, render_table, render_text
from sinks.monitor.summary import SummaryBuilder

# The block in the contract, verbatim (its underline is 28 '=' for a 29-character title).
CONTRACT_EXAMPLE = """\
Contest Workflow Load Summary
============================
Contests observed: 12
Resolved contests: 11 (workflow failures: 1)
Arming duration p95: 7420.00 ms (budget 8000 ms)
Arming duration p50 / max: 3100.00 ms / 7900.00 ms
Resolution duration p95: 910.00 ms (budget 800 ms) ⚠
Resolution duration p50 / max: 410.00 ms / 990.00 ms
Resolution samples missing: 1
Average participants: 2.25 (max 4)
Contests with >2 participants: 3 / 12
Contest capacity requests >2 participants: 2"""


def duration(
    samples: int, missing: int, p50: float, p95: float, peak: float, budget: float
) -> dict[str, Any]:
    return {
        "samples": samples,
        "missing": missing,
        "p50": p50,
        "p95": p95,
        "max": peak,
        "budget": budget,
        "breached": p95 > budget,
    }


def test_contract_example_text_byte_for_byte() -> None:
    # Built as a summary, not from events: with nearest rank, n <= 19 samples always
    # gives p95 == max, so no 12-contest log can have p95 7420 with max 7900.
    summary = {
        "totals": {"contestsObserved": 12, "resolvedContests": 11, "workflowFailures": 1},
        "durations": {
            "arming": duration(12, 0, 3100.0, 7420.0, 7900.0, 8000.0),
            "resolution": duration(11, 1, 410.0, 910.0, 990.0, 800.0),
        },
        "participants": {
            "samples": 12,
            "average": 2.25,
            "max": 4.0,
            "multiActorContests": 3,
            "capacityOverTwo": 2,
        },
    }
    assert render_text(summary) == CONTRACT_EXAMPLE
    assert render_text(summary).encode("utf-8") == CONTRACT_EXAMPLE.encode("utf-8")


def contract_like_log() -> list[bytes]:
    """12 contests, 11 resolved, 1 workflow failure: the contract's example as far as events can give it."""
    arming = [1000, 1500, 2000, 2500, 2800, 3100, 3500, 4000, 5000, 6000, 7420, 7900]
    resolution = [200, 250, 300, 350, 400, 410, 500, 600, 700, 910, 990]
    counts = [4, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 1]
    capacities = [4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1]
    events: list[dict[str, Any]] = []
    for index in range(12):
        base = {"hubId": f"hub-{index % 3}", "roomId": f"room-{index}", "contestId": f"contest-{index}"}
        events.append(
            {
                "message": "telemetry.contest.launched",
                **base,
                "armingDurationMs": arming[index],
                "participantCount": counts[index],
                "participantCapacity": capacities[index],
            }
        )
        if index < 11:
            events.append(
                {"message": "telemetry.contest.resolved", **base, "resolutionDurationMs": resolution[index]}
            )
    events.append({"message": "telemetry.contest.workflowFailed", "contestId": "contest-11", "error": "x"})
    return [json.dumps(event).encode() for event in events]


def test_contract_like_log_text() -> None:
    builder = SummaryBuilder()
    builder.feed_lines(contract_like_log())
    assert render_text(builder.build()) == (
        "Contest Workflow Load Summary\n"
        "============================\n"
        "Contests observed: 12\n"
        "Resolved contests: 11 (workflow failures: 1)\n"
        "Arming duration p95: 7900.00 ms (budget 8000 ms)\n"
        "Arming duration p50 / max: 3100.00 ms / 7900.00 ms\n"
        "Resolution duration p95: 990.00 ms (budget 800 ms) ⚠\n"
        "Resolution duration p50 / max: 410.00 ms / 990.00 ms\n"
        "Resolution samples missing: 1\n"
        "Average participants: 2.25 (max 4)\n"
        "Contests with >2 participants: 3 / 12\n"
        "Contest capacity requests >2 participants: 2"
    )


def test_empty_text_uses_the_none_lines() -> None:
    assert render_text(SummaryBuilder().build()) == (
        "Contest Workflow Load Summary\n"
        "============================\n"
        "Contests observed: 0\n"
        "Resolved contests: 0 (workflow failures: 0)\n"
        "Arming duration samples: none\n"
        "Resolution duration samples: none\n"
        "Participant data: none"
    )


def test_missing_arming_line_and_no_capacity_line() -> None:
    builder = SummaryBuilder()
    builder.feed_lines(
        [
            b'{"message":"telemetry.contest.resolved","contestId":"a","resolutionDurationMs":12.345,'
            b'"participantCount":2.5}',
            b'{"message":"telemetry.contest.launched","contestId":"b","armingDurationMs":0.125}',
        ]
    )
    assert render_text(builder.build(arming_budget=7.5)) == (
        "Contest Workflow Load Summary\n"
        "============================\n"
        "Contests observed: 2\n"
        "Resolved contests: 1 (workflow failures: 0)\n"
        "Arming duration p95: 0.13 ms (budget 7.5 ms)\n"
        "Arming duration p50 / max: 0.13 ms / 0.13 ms\n"
        "Arming samples missing: 1\n"
        "Resolution duration p95: 12.35 ms (budget 800 ms)\n"
        "Resolution duration p50 / max: 12.35 ms / 12.35 ms\n"
        "Resolution samples missing: 1\n"
        "Average participants: 2.50 (max 2.5)\n"
        "Contests with >2 participants: 1 / 1"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (240.0, "240"),
        (2.25, "2.25"),
        (0.0, "0"),
        (-0.0, "0"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789012345680000.0, "123456789012345680000"),
        (12345678901234567890, "12345678901234567000"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
    ],
)
def test_js_number(value: float, text: str) -> None:
    assert js_number(value) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.005, "1.00"), (0.125, "0.13"), (1.125, "1.13"), (2.5, "2.50"), (999.995, "1000.00"), (-0.0, "0.00")],
)
def test_js_to_fixed_rounds_ties_away_from_zero(value: float, text: str) -> None:
    assert js_to_fixed(value) == text


def test_render_json_matches_json_stringify_layout() -> None:
    value = {"b": 1.0, "2": [], "10": {}, "1": [1, 2.5, None, True], "s": 'a\x01"\\\n\ud800é'}
    assert render_json(value) == (
        "{\n"
        '  "1": [\n    1,\n    2.5,\n    null,\n    true\n  ],\n'
        '  "2": [],\n'
        '  "10": {},\n'
        '  "b": 1,\n'
        '  "s": "a\\u0001\\"\\\\\\n\\ud800é"\n'
        "}"
    )
    assert render_json(float("inf")) == "null"


def test_render_table_lists_hubs_and_totals() -> None:
    builder = SummaryBuilder()
    builder.feed_lines(contract_like_log())
    console = Console(width=200, record=True, color_system=None)
    console.print(render_table(builder.build(), builder.by_hub()))
    text = console.export_text()
    for name in ("hub-0", "hub-1", "hub-2", "(no hub)", "Total", "990.00 ⚠"):
        assert name in text


def test_write_json_streams_the_same_text_in_chunks() -> None:
    from sinks.monitor.render import LazyArray, write_json

    rows = [{"id": f"c{i}", "v": i / 4, "o": []} for i in range(5000)]
    chunks: list[str] = []
    write_json({"raw": LazyArray(iter(rows)), "none": LazyArray(())}, chunks.append)
    assert len(chunks) > 2
    assert "".join(chunks) == render_json({"raw": rows, "none": []})
