from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from contest_telemetry.schema import decode_record
from contest_telemetry.settings import KafkaSettings
from producers import ContestPublisher, PublisherSettings
from producers.exceptions import InvalidEventError, PublisherClosedError
from tests.conftest import KafkaTarget
from tests.contest_telemetry.contract_events import ALL
from tests.helpers.kafka import consume

pytestmark = pytest.mark.kafka


async def test_every_contract_event_round_trips_as_identical_json(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("roundtrip", partitions=2)
    settings = PublisherSettings(batching="single")
    async with ContestPublisher(kafka_settings, settings, topic=topic) as pub:
        for event in ALL:
            assert await pub.publish(dict(event, eventId=f"id-{event['message']}"))
    assert pub.stats()["sent"] == len(ALL), pub.stats()
    records = await consume(kafka_broker.bootstrap, topic, count=len(ALL))
    got = sorted((orjson.loads(r.value) for r in records), key=lambda e: e["eventId"])
    want = sorted((dict(e, eventId=f"id-{e['message']}") for e in ALL), key=lambda e: e["eventId"])
    assert got == want
    assert {r.key for r in records} == {b"hub-1"}  # keyed by hubId


async def test_record_methods_compute_durations_and_envelope_per_hub(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("record", partitions=2)
    async with ContestPublisher(kafka_settings, PublisherSettings(linger_ms=50), topic=topic) as pub:
        common = {"room_id": "r", "contest_key": "k"}
        await pub.record_armed(hub_id="h1", created_at=100, expires_at=15100, **common)
        await pub.record_launched(
            hub_id="h1", contest_id="c", created_at=100, started_at=340, participant_count=3, **common
        )
        await pub.record_workflow_started(hub_id="h1", contest_id="c", workflow_id="wf", **common)
        await pub.record_resolved(
            hub_id="h1",
            contest_id="c",
            created_at=100,
            started_at=340,
            resolved_at=920,
            participant_count=3,
            outcome_tier="win",
            **common,
        )
        await pub.record_workflow_failed(hub_id="h2", contest_id="d", **common)
        await pub.record_expired(hub_id="h2", created_at=0, expires_at=500, expired_at=800, **common)
    records = await consume(kafka_broker.bootstrap, topic, count=2)  # one envelope per hub
    events = {}
    for record in records:
        decoded = decode_record(record.value)
        assert decoded.envelope and not decoded.invalid
        assert {e.hub_id for e in decoded.events} == {record.key.decode()}
        events.update({e.message.rsplit(".", 1)[1]: e.to_wire() for e in decoded.events})
    assert events["armed"]["windowMs"] == 15000
    assert events["launched"]["armingDurationMs"] == 240
    assert (events["resolved"]["armingDurationMs"], events["resolved"]["resolutionDurationMs"]) == (240, 580)
    assert events["workflowFailed"]["error"] == "workflow_failed"
    assert events["workflowFailed"]["level"] == "error"
    assert (events["expired"]["windowMs"], events["expired"]["armingDurationMs"]) == (500, 800)
    assert len({e["eventId"] for e in events.values()}) == 6


async def test_close_flushes_everything(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("flush", partitions=2)
    # A long linger: only close() can be what pushes the events out.
    pub = await ContestPublisher(kafka_settings, PublisherSettings(linger_ms=60_000), topic=topic).start()
    for i in range(2_000):
        await pub.record_workflow_started(
            hub_id=f"h{i % 7}", room_id="r", contest_id=f"c{i}", contest_key="k", workflow_id="wf"
        )
    await pub.close()
    assert pub.stats()["sent"] == 2_000 and pub.stats()["buffered"] == 0
    records = await consume(kafka_broker.bootstrap, topic, count=7, idle=0.5)
    ids = [e.event_id for r in records for e in decode_record(r.value).events]
    assert len(ids) == len(set(ids)) == 2_000
    with pytest.raises(PublisherClosedError):
        await pub.record_workflow_started(
            hub_id="h", room_id="r", contest_id="c", contest_key="k", workflow_id=None
        )


async def test_idempotent_acks_all_on_apache_kafka(
    require_apache_kafka: None, kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("idem")
    async with ContestPublisher(kafka_settings, PublisherSettings(idempotence="on"), topic=topic) as pub:
        assert pub.idempotent
        assert pub._producer is not None and pub._producer._txn_manager is not None  # idempotent producer
        for i in range(100):
            await pub.record_workflow_failed(hub_id="h", room_id="r", contest_id=f"c{i}", contest_key="k")
    assert pub.stats()["sent"] == 100


async def test_auto_idempotence_matches_the_broker(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    async with ContestPublisher(kafka_settings, topic=make_topic("auto")) as pub:
        assert pub.idempotent == kafka_broker.idempotence


async def test_full_buffer_drops_and_counts(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("drop")
    registry = CollectorRegistry()
    settings = PublisherSettings(buffer_size=10, overflow="drop", linger_ms=60_000, max_envelope_events=1000)
    pub = await ContestPublisher(kafka_settings, settings, topic=topic, registry=registry).start()
    accepted = [
        await pub.record_workflow_failed(hub_id="h", room_id="r", contest_id=f"c{i}", contest_key="k")
        for i in range(25)
    ]
    assert accepted == [True] * 10 + [False] * 15
    await pub.close()
    assert registry.get_sample_value("contest_publisher_events_dropped_total") == 15
    assert registry.get_sample_value("contest_publisher_events_sent_total") == 10
    [record] = await consume(kafka_broker.bootstrap, topic, count=1)
    decoded = decode_record(record.value)
    assert len(decoded.events) == 10 and decoded.publisher_dropped == 15  # the worker learns of drops


async def test_full_buffer_waits_with_wait_policy(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("wait")
    settings = PublisherSettings(buffer_size=5, overflow="wait", linger_ms=1)
    async with ContestPublisher(kafka_settings, settings, topic=topic) as pub:
        results = await asyncio.gather(
            *(
                pub.record_workflow_failed(hub_id="h", room_id="r", contest_id=f"c{i}", contest_key="k")
                for i in range(200)
            )
        )
    assert all(results) and pub.stats()["dropped"] == 0 and pub.stats()["sent"] == 200


# Each would have made the whole envelope it shared with good events fail in the sender.
_UNSENDABLE: list[dict[str, Any]] = [
    {"big": 2**64},  # an int beyond 64 bits
    {"tags": {"a", "b"}},  # a set
    {"meta": {1: "x"}},  # a non-str key
    {"createdAt": math.nan},  # NaN where the schema says finite
    {"schemaVersion": -1},  # beyond the schema's bounds
    {"note": "\ud800"},  # not valid UTF-8
]


async def test_one_event_that_cannot_be_encoded_never_fails_its_envelope(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("unsendable")
    settings = PublisherSettings(linger_ms=60_000, max_envelope_events=500)
    registry = CollectorRegistry()
    pub = await ContestPublisher(kafka_settings, settings, topic=topic, registry=registry).start()
    common = {"hub_id": "h", "room_id": "r", "contest_key": "k"}
    for i in range(250):
        assert await pub.record_workflow_failed(contest_id=f"c{i}", **common)
    for extra in _UNSENDABLE:
        with pytest.raises(InvalidEventError) as info:
            await pub.record_workflow_failed(contest_id="bad", **common, **extra)
        (field,) = extra
        assert info.value.errors and info.value.errors[0].field.split(".")[0] == field, info.value
        with pytest.raises(InvalidEventError):
            await pub.publish(
                {
                    "message": "telemetry.contest.workflowFailed",
                    "hubId": "h",
                    "contestKey": "k",
                    "contestId": "x",
                }
                | extra
            )
    for i in range(250, 499):
        assert await pub.record_workflow_failed(contest_id=f"c{i}", **common)
    await pub.close()
    stats = pub.stats()
    assert (stats["sent"], stats["failed"], stats["rejected"]) == (499, 0, 2 * len(_UNSENDABLE)), stats
    assert registry.get_sample_value("contest_publisher_events_rejected_total") == 2 * len(_UNSENDABLE)
    [record] = await consume(kafka_broker.bootstrap, topic, count=1, idle=0.5)
    decoded = decode_record(record.value)
    assert decoded.envelope and not decoded.invalid
    assert [e.to_wire()["contestId"] for e in decoded.events] == [f"c{i}" for i in range(499)]


async def test_envelopes_are_cut_to_the_record_size_limit(
    kafka_settings: KafkaSettings, make_topic, kafka_broker: KafkaTarget
) -> None:
    topic = make_topic("cut")
    settings = PublisherSettings(linger_ms=60_000, max_record_bytes=20_000, max_envelope_events=500)
    pub = await ContestPublisher(kafka_settings, settings, topic=topic).start()
    for i in range(40):
        await pub.record_workflow_failed(
            hub_id="h", room_id="r", contest_id=f"c{i}", contest_key="k", error="e" * (1000 + 97 * i)
        )
    with pytest.raises(InvalidEventError, match="CT_PUBLISHER_MAX_RECORD_BYTES=20000") as info:
        await pub.record_workflow_failed(
            hub_id="h", room_id="r", contest_id="c", contest_key="k", error="e" * 20_000
        )
    assert info.value.reason == "size"
    await pub.close()
    assert pub.stats()["sent"] == 40 and pub.stats()["failed"] == 0
    records = await consume(kafka_broker.bootstrap, topic, count=pub.stats()["records"], idle=0.5)
    assert len(records) > 1 and all(len(r.value) <= 20_000 for r in records)
    ids = [e.to_wire()["contestId"] for r in records for e in decode_record(r.value).events]
    assert ids == [f"c{i}" for i in range(40)]
