"""The ingest stage against retention on a real broker: offsets deleted before the stage read them
are reported once (a WARNING with the range, a count) and the stage goes on from the log start;
a new group with no committed offset still starts at the log start. Both input forms."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import orjson
import pytest

from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics
from streams.counters import INGEST_LOST_OFFSETS
from streams.ingest import IngestStage
from streams.ingested import parse_ingested
from streams.settings import IngestSettings
from tests.helpers.streams_reference import make_events
from tests.streams.test_ingest import _committed, _expected, _produce, _read, _seen, _topics
from tests.streams.test_worker_kafka import FORMS, _delete_up_to, as_records

pytestmark = [pytest.mark.kafka, pytest.mark.apache_kafka, pytest.mark.timeout(240)]

LOST = re.compile(r"ingest: (\S+)\[(\d+)\]: offsets (\d+)\.\.(\d+) \((\d+)\) were deleted by retention")


async def _run_until(stage: IngestStage, bootstrap: str, topic: str, done: Any) -> list[Any]:
    """Run ``stage`` until ``done(records of the ingested topic)``; stop it (its poll committed)."""
    await stage.start()
    stop = asyncio.Event()
    task = asyncio.create_task(stage.run(stop))
    try:
        return await _read(bootstrap, topic, done, alive=lambda: not task.done(), idle=1.0)
    finally:
        stop.set()
        await task
        await stage.stop()


def _carried(records: list[Any], reason: str) -> int:
    return sum(
        b.dead_letters.get(reason, 0) for r in records for b in parse_ingested(orjson.loads(r.value)) or ()
    )


def _ends_of(where: list[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for p, o in where:
        out[p] = max(out.get(p, 0), o + 1)
    return out


@FORMS
async def test_offsets_deleted_before_the_stage_read_them_are_reported_once_and_it_goes_on(
    kafka_settings: KafkaSettings,
    kafka_broker: Any,
    require_apache_kafka: None,
    unique: str,
    form: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="streams.ingest")
    bootstrap = kafka_broker.bootstrap
    topics = _topics(unique, partitions=2)
    await ensure_topics(kafka_settings, pipeline_topics(topics))
    settings = IngestSettings(group_id=f"ingest-{unique}", max_poll_records=50)
    first, second, third = (
        as_records(make_events(hubs=4, contests_per_hub=6, seed=seed), form, per=5) for seed in (1, 2, 3)
    )

    # A new group, no committed offset: it starts at the log start (what "earliest" did).
    where = await _produce(bootstrap, topics.events, first)
    want = _expected(first, where)
    stage = IngestStage(kafka_settings, topics, settings)
    await _run_until(stage, bootstrap, topics.ingested, lambda rs: set(want) <= {k[:3] for k in _seen(rs, 2)})
    ends = _ends_of(where)
    assert set(ends) == {0, 1}  # both partitions have a committed offset to lose records behind
    assert await _committed(kafka_settings, topics.events, settings.group_id, 2) == ends
    assert stage.counters.lost_offsets == 0
    assert not [r for r in caplog.records if r.name == "streams.ingest" and r.levelno >= logging.WARNING]

    # Stopped: more records arrive and retention deletes them before the stage reads them.
    deleted = await _produce(bootstrap, topics.events, second)
    new_ends = {**ends, **_ends_of(deleted)}
    await _delete_up_to(bootstrap, topics.events, new_ends)
    lost = {p: (ends[p], new_ends[p] - 1) for p in new_ends if new_ends[p] > ends[p]}
    assert sum(b - a + 1 for a, b in lost.values()) == len(second)
    later = await _produce(bootstrap, topics.events, third)
    want_later = _expected(third, later)

    caplog.clear()
    stage = IngestStage(kafka_settings, topics, settings)
    out = await _run_until(
        stage, bootstrap, topics.ingested, lambda rs: set(want_later) <= {k[:3] for k in _seen(rs, 2)}
    )
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "streams.ingest" and r.levelno >= logging.WARNING
    ]
    reported = [m.groups() for m in map(LOST.search, warnings) if m]
    assert sorted((int(p), int(a), int(b)) for _t, p, a, b, _n in reported) == sorted(
        (p, a, b) for p, (a, b) in lost.items()
    ), warnings  # once per partition, with the range
    assert all(t == topics.events for t, *_ in reported)
    assert stage.counters.lost_offsets == len(second) and stage.counters.lost_ranges == len(lost)
    # The count rides to the worker (contest_ingest_lost_offsets_total) on the packed records.
    assert _carried(out, INGEST_LOST_OFFSETS) == len(second)
    # Later records are ingested, once each; nothing of the deleted range appears.
    seen = _seen(out, 2)
    after = {k: n for k, n in seen.items() if k[1] >= new_ends[k[0]]}
    assert {k[:3]: k[3] for k in after} == want_later and set(after.values()) == {1}
    assert not [k for k in seen if ends[k[0]] <= k[1] < new_ends[k[0]]]
    final = {**new_ends, **_ends_of(later)}
    assert await _committed(kafka_settings, topics.events, settings.group_id, 2) == final
