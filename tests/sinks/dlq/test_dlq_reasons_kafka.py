"""``dlq inspect`` on a real broker when the dead-letter topic holds more distinct reasons than
CT_DLQ_MAX_REASONS: reasons are strings of the topic's data (any producer of the topic writes them),
so those past the bound are counted together (``otherReasons``) with a few samples.

The dead letters are the worker's own (:func:`streams.dlq.dlq_value`) for both input forms, a
single record and an event of an envelope, each written again under several reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from contest_telemetry.cli.main import main as ct_main
from contest_telemetry.schema import decode_record, encode_envelope
from contest_telemetry.settings import KafkaSettings
from streams.dlq import cut_dlq, dlq_value
from tests.helpers.archive_data import event

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

REASONS = 6
BOUND = 2


def _dead_letters() -> list[tuple[bytes, bytes]]:
    """(key, value) of dead letters, as the worker writes them, with REASONS distinct reasons."""
    single = orjson.dumps(dict(event(1, "hub-a"), participantCount="x"))
    envelope = encode_envelope("hub-b", [event(2, "hub-b"), dict(event(3, "hub-b"), participantCount=-1)])
    letters: list[tuple[bytes, bytes]] = []
    for key, value in ((b"hub-a", single), (b"hub-b", envelope)):
        decoded = decode_record(value)
        (invalid,) = decoded.invalid
        dv = dlq_value(
            invalid,
            topic="contest.events",
            partition=0,
            offset=len(letters),
            key=key,
            original=value,
            envelope=decoded.envelope,
        )
        letters.append((key, cut_dlq(dv)[0]))
    out = []
    for n in range(REASONS):
        for key, value in letters:
            out.append((key, orjson.dumps(dict(orjson.loads(value), reason=f"reason-{n}"))))
    return out


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _inspect(capsys: pytest.CaptureFixture[str], bootstrap: str, topic: str, *flags: str) -> str:
    assert ct_main(["dlq", "inspect", "--topic", topic, "--bootstrap", bootstrap, *flags]) == 0
    return capsys.readouterr().out


def test_reasons_past_the_bound_are_folded_and_reported(
    kafka_settings: KafkaSettings,
    make_topic: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    topic = make_topic("dlq")
    asyncio.run(_produce(bootstrap, topic, _dead_letters()))
    monkeypatch.setenv("CT_DLQ_MAX_REASONS", str(BOUND))
    monkeypatch.setenv("CT_DLQ_SAMPLES", "1")

    report: dict[str, Any] = orjson.loads(_inspect(capsys, bootstrap, topic, "--json"))
    assert (report["read"], report["matched"], report["truncated"]) == (2 * REASONS, 2 * REASONS, False)
    assert report["byReason"] == {"reason-0": 2, "reason-1": 2}
    assert report["otherReasons"] == 2 * (REASONS - BOUND)
    assert sum(report["byReason"].values()) + report["otherReasons"] == report["matched"]
    assert {r: len(s) for r, s in report["samples"].items()} == {"reason-0": 1, "reason-1": 1}
    assert [s["reason"] for s in report["otherReasonSamples"]] == ["reason-2"]
    assert report["byHub"] == {"hub-a": REASONS, "hub-b": REASONS}

    table = _inspect(capsys, bootstrap, topic)
    assert "(other, over CT_DLQ_MAX_REASONS)" in table
    row = next(line for line in table.splitlines() if "(other, over CT_DLQ_MAX_REASONS)" in line)
    assert str(2 * (REASONS - BOUND)) in row

    # A bound above the reasons found folds nothing.
    monkeypatch.setenv("CT_DLQ_MAX_REASONS", str(REASONS))
    report = orjson.loads(_inspect(capsys, bootstrap, topic, "--json"))
    assert report["otherReasons"] == 0 and report["otherReasonSamples"] == []
    assert report["byReason"] == {f"reason-{n}": 2 for n in range(REASONS)}
