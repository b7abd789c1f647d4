"""The dead-letter tools without a broker: dead letters as streams/dlq.py writes them, read back
(reason, hub, fields, the payload to redrive), counted within bounds, and the CLI's bad flags.

Against a real broker and dead letters a real worker wrote: test_dlq_tools_kafka.py.
"""

from __future__ import annotations

import time

import orjson
import pytest

from contest_telemetry.cli.main import main as ct_main
from contest_telemetry.schema import decode_record, encode_envelope
from sinks.dlq.tools import NOT_A_DEAD_LETTER, DeadLetter, InspectReport, Selection, still_fails
from streams.dlq import cut_dlq, dlq_value
from streams.settings import EventTimeSettings
from tests.helpers.archive_data import event


def _letters(value: bytes, key: bytes = b"hub-1") -> list[DeadLetter]:
    """The dead letters the worker writes for one record (its own functions), read back."""
    decoded = decode_record(value)
    out = []
    for n, invalid in enumerate(decoded.invalid):
        dv = dlq_value(
            invalid,
            topic="contest.events",
            partition=0,
            offset=n,
            key=key,
            original=value,
            envelope=decoded.envelope,
        )
        out.append(DeadLetter.parse(0, n, 1_000, key, cut_dlq(dv)[0]))
    return out


def test_a_validation_failure_in_an_envelope_redrives_that_event_alone() -> None:
    good = event(1, "hub-1")
    bad = dict(event(2, "hub-1"), participantCount="three")
    (letter,) = _letters(encode_envelope("hub-1", [good, bad]))
    assert (letter.reason, letter.hub, letter.fields) == (
        "validation",
        "hub-1",
        ["events.1.participantCount"],
    )
    payload = letter.payload()
    assert payload is not None and orjson.loads(payload) == bad
    assert still_fails(payload, time.time() * 1000.0, EventTimeSettings()) == "validation"
    fixed = orjson.dumps(dict(bad, participantCount=3))
    assert still_fails(fixed, time.time() * 1000.0, EventTimeSettings()) is None


def test_a_record_that_was_not_json_comes_back_byte_for_byte() -> None:
    (letter,) = _letters(b"\x00\xffjunk")
    assert (letter.reason, letter.hub) == ("decode", "hub-1")
    assert letter.payload() == b"\x00\xffjunk"
    assert still_fails(b"\x00\xffjunk", 0.0, EventTimeSettings()) == "decode"


def test_a_cut_payload_cannot_be_redriven() -> None:
    huge = dict(event(3), participantCount="x", label="y" * 1_100_000)
    (letter,) = _letters(orjson.dumps(huge))
    assert letter.value is not None and letter.value["payloadTruncated"] is True
    assert letter.payload() is None


def test_event_time_is_checked_against_the_time_of_the_redrive() -> None:
    ahead = dict(event(4), timestamp="2026-05-01T10:20:00.000Z")
    record_ms = 1_777_629_600_000.0  # 2026-05-01T10:00:00Z: the event is 20 min ahead
    assert still_fails(orjson.dumps(ahead), record_ms, EventTimeSettings()) == "event_time"
    assert still_fails(orjson.dumps(ahead), record_ms + 1_800_000, EventTimeSettings()) is None


def test_records_that_are_not_dead_letters_are_counted_apart() -> None:
    letter = DeadLetter.parse(1, 7, 0, None, b"[1, 2]")
    assert (letter.reason, letter.hub, letter.fields, letter.payload()) == (NOT_A_DEAD_LETTER, None, [], None)


def test_selection_and_bounded_counts() -> None:
    flat = [
        dl
        for n in range(5)
        for dl in _letters(
            orjson.dumps(dict(event(n, f"hub-{n}"), participantCount="x")), f"hub-{n}".encode()
        )
    ]
    flat += _letters(b"junk", b"hub-9")
    assert [dl.reason for dl in flat if Selection(reasons=frozenset({"decode"})).matches(dl)] == ["decode"]
    assert len([dl for dl in flat if Selection(hubs=frozenset({"hub-1", "hub-9"})).matches(dl)]) == 2
    assert not Selection(since_ms=2_000.0).matches(flat[0])
    report = InspectReport("dlq", max_keys=3, samples_per_reason=2)
    for dl in flat:
        report.add(dl)
    data = report.as_dict()
    assert data["byReason"] == {"validation": 5, "decode": 1}
    assert sum(data["byHub"].values()) + data["otherHubs"] == 6 and len(data["byHub"]) == 3
    assert data["otherHubs"] == 3
    assert {r: len(s) for r, s in data["samples"].items()} == {"validation": 2, "decode": 1}
    assert list(data) == [
        "topic",
        "read",
        "matched",
        "truncated",
        "nextOffsets",
        "ranges",
        "byReason",
        "otherReasons",
        "byField",
        "otherFields",
        "byHub",
        "otherHubs",
        "samples",
        "otherReasonSamples",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "--since", "soon"], "--since: not an ISO-8601 time: 'soon'"),
        (["inspect", "--from-offset", "9", "--to-offset", "3"], "--to-offset 3 is before --from-offset 9"),
        (["redrive", "--partition", "-1"], "argument --partition: expected an integer >= 0, got '-1'"),
        (["inspect", "--samples", "x"], "argument --samples: expected an integer >= 0, got 'x'"),
        (["inspect", "--samples", "101"], "CT_DLQ_SAMPLES=101: Input should be less than or equal to 100"),
        (["inspect", "--max", "0"], "argument --max: expected a positive integer"),
        (["redrive", "--to", "bad topic"], "--to: not a Kafka topic name: 'bad topic'"),
        (["inspect", "--json", "--topic", "a/b"], "--topic: not a Kafka topic name: 'a/b'"),
        (["purge"], "invalid choice: 'purge' (choose from 'inspect', 'redrive')"),
    ],
)
def test_bad_flags_are_one_line_and_non_zero(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert ct_main(["dlq", *args, "--bootstrap", "127.0.0.1:1"] if args != ["purge"] else ["dlq", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_tables_print_names_that_look_like_rich_markup_as_they_are() -> None:
    """Hub ids, reasons and errors come from dead letters: "[/x]" is text, never markup (rich
    raised MarkupError on it)."""
    import io

    from rich.table import Table

    from sinks.dlq.cli import _console

    out = io.StringIO()
    table = Table()
    table.add_column("hub")
    table.add_row("[/bad] [bold]x")
    _console(out).print(table)
    assert "[/bad] [bold]x" in out.getvalue()


def test_reasons_over_the_bound_are_counted_together_with_samples() -> None:
    """Reasons come from the topic's data: past CT_DLQ_MAX_REASONS they fold into otherReasons."""
    base = _letters(b"junk")[0].value  # a dead letter as the worker writes it
    assert base is not None
    letters = [
        DeadLetter.parse(0, n, 1_000, b"hub-1", orjson.dumps(dict(base, reason=f"reason-{n % 7}")))
        for n in range(21)
    ]
    report = InspectReport("dlq", max_keys=10, samples_per_reason=2, max_reasons=3)
    for letter in letters:
        report.add(letter)
    data = report.as_dict()
    assert data["byReason"] == {"reason-0": 3, "reason-1": 3, "reason-2": 3}
    assert data["otherReasons"] == 12
    assert set(data["samples"]) == {"reason-0", "reason-1", "reason-2"}
    assert [s["reason"] for s in data["otherReasonSamples"]] == ["reason-3", "reason-4"]
