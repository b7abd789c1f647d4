"""``dlq inspect`` and ``dlq redrive`` against a real broker, on dead letters a real worker wrote.

The worker's ingest stage dead-letters, in both input forms (single records and envelopes):
an event 40 minutes ahead of its record's timestamp (``event_time``), an event with a bad field
(``validation``) and a record that is not JSON (``decode``). Redriven now, the ``event_time``
events pass (they are 20 minutes in the past of the redrive, within CT_EVENT_TIME_*), the others
still fail and are skipped.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from contest_telemetry.schema import decode_record, encode_envelope
from contest_telemetry.settings import KafkaSettings, TopicSettings
from tests.helpers.archive_data import event
from tests.helpers.kafka import consume
from tests.helpers.streams_reference import iso
from tests.helpers.streams_worker import WorkerProcess

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[3]


def _dlq(topics: TopicSettings, bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **topics.as_env()}
    command = [sys.executable, "-m", "contest_telemetry", "dlq", *args, "--bootstrap", bootstrap]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr
    return dict(orjson.loads(done.stdout))


def _ends(bootstrap: str, topic: str) -> dict[int, int]:
    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            await consumer._client.force_metadata_update()
            tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            return {tp.partition: o for tp, o in (await consumer.end_offsets(tps)).items()}
        finally:
            await consumer.stop()

    return asyncio.run(read())


async def _produce_failures(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    now = time.time() * 1000.0
    record_ms = int(now - 3_600_000)
    ahead = iso(now - 1_200_000)  # 40 min after its record's timestamp, 20 min before now
    fine = iso(now - 3_590_000)
    single_ahead = dict(event(1, "hub-a", timestamp=ahead), eventId="ahead-single")
    single_bad = dict(event(2, "hub-a", timestamp=fine), participantCount="three", eventId="bad-single")
    env_ok = dict(event(3, "hub-b", timestamp=fine), eventId="ok-envelope")
    env_ahead = dict(event(4, "hub-b", timestamp=ahead), eventId="ahead-envelope")
    env_bad = dict(event(5, "hub-b", timestamp=fine), participantCount=-1, eventId="bad-envelope")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in (
            (b"hub-a", orjson.dumps(single_ahead)),
            (b"hub-a", orjson.dumps(single_bad)),
            (b"hub-a", b"\x00\xffnot json"),
            (b"hub-b", encode_envelope("hub-b", [env_ok, env_ahead])),
            (b"hub-b", encode_envelope("hub-b", [env_bad])),
        ):
            await producer.send_and_wait(topic, value, key=key, timestamp_ms=record_ms)
    finally:
        await producer.stop()
    return {"ahead-single": single_ahead, "ahead-envelope": env_ahead}


@pytest.fixture
def worker(
    tmp_path: Path, kafka_settings: KafkaSettings, topic_settings: TopicSettings, unique: str
) -> Iterator[WorkerProcess]:
    w = WorkerProcess(
        kafka_settings.bootstrap_servers,
        topic_settings,
        f"ct-test-{unique}",
        tmp_path / "data",
        tmp_path / "w.log",
    )
    w.start()
    try:
        yield w
    finally:
        w.stop()


def test_inspect_and_redrive_dead_letters(
    worker: WorkerProcess, kafka_settings: KafkaSettings, topic_settings: TopicSettings
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    passing = asyncio.run(_produce_failures(bootstrap, topic_settings.events))
    letters = asyncio.run(consume(bootstrap, topic_settings.dlq, count=5, timeout=120, idle=1.0))
    assert len(letters) == 5, worker.log()

    report = _json(_dlq(topic_settings, bootstrap, "inspect", "--json"))
    assert report["topic"] == topic_settings.dlq
    assert (report["read"], report["matched"], report["truncated"]) == (5, 5, False)
    assert report["byReason"] == {"event_time": 2, "validation": 2, "decode": 1}
    assert report["byHub"] == {"hub-a": 3, "hub-b": 2}
    assert report["byField"]["timestamp"] == 2
    assert sum(n for f, n in report["byField"].items() if f.endswith("participantCount")) == 2
    assert {r: len(s) for r, s in report["samples"].items()} == {
        "decode": 1,
        "event_time": 2,
        "validation": 2,
    }
    assert sum(report["nextOffsets"].values()) == sum(_ends(bootstrap, topic_settings.dlq).values())

    bounded = _json(_dlq(topic_settings, bootstrap, "inspect", "--json", "--max", "2", "--reason", "decode"))
    assert (bounded["read"], bounded["truncated"]) == (2, True)
    assert bounded["matched"] <= 1 and set(bounded["byReason"]) <= {"decode"}

    table = _dlq(topic_settings, bootstrap, "inspect")
    assert table.returncode == 0 and "by reason" in table.stdout and "event_time" in table.stdout

    events_before = _ends(bootstrap, topic_settings.events)
    dry = _json(_dlq(topic_settings, bootstrap, "redrive", "--dry-run", "--json"))
    assert (dry["dryRun"], dry["redriven"], dry["stillFailing"], dry["unrecoverable"]) == (True, 2, 3, 0)
    assert dry["stillFailingByReason"] == {"validation": 2, "decode": 1}
    assert _ends(bootstrap, topic_settings.events) == events_before

    only_bad = _json(_dlq(topic_settings, bootstrap, "redrive", "--reason", "validation", "--json"))
    assert (only_bad["matched"], only_bad["redriven"], only_bad["stillFailing"]) == (2, 0, 2)
    assert _ends(bootstrap, topic_settings.events) == events_before

    done = _json(_dlq(topic_settings, bootstrap, "redrive", "--json"))
    assert (done["redriven"], done["stillFailing"], done["target"]) == (2, 3, topic_settings.events)
    after = _ends(bootstrap, topic_settings.events)
    assert sum(after.values()) - sum(events_before.values()) == 2
    dead = {f"{topic_settings.dlq}/{r.partition}/{r.offset}": orjson.loads(r.value) for r in letters}
    records = asyncio.run(consume(bootstrap, topic_settings.events, count=7, timeout=60))
    redriven = [r for r in records if any(k == "ct-redrive" for k, _ in r.headers)]
    assert len(redriven) == 2
    for r in redriven:
        value = orjson.loads(r.value)
        sent = passing[value["eventId"]]
        # The ingest stage dead-letters a valid event as it normalised it (defaults filled in).
        assert {k: value[k] for k in sent} == sent
        assert not decode_record(r.value).invalid
        origin = dict(r.headers)["ct-redrive"].decode()
        assert dead[origin]["reason"] == "event_time" and dead[origin]["event"] == value
        assert r.key == value["hubId"].encode()
