"""A send the broker rejects, on a real broker: the worker stops without committing past the input
record whose output failed, and a restart applies it exactly once. Both input forms.

The broker rejects every contest record while the records topic's ``max.message.bytes`` is made
too small for one (``MESSAGE_TOO_LARGE``, not retriable); the unit tests of each step's failure
are in test_apply.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contest_telemetry.settings import KafkaSettings, TopicSettings
from tests.helpers.kafka import consume
from tests.helpers.streams_reference import P, check_all, make_events, reference_windows
from tests.helpers.streams_worker import WorkerProcess, produce
from tests.streams.test_worker_kafka import (
    FORMS,
    _wait_windows,
    as_records,
    expected_ids,
    results_of,
    tick_records,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(300)]


STOPPED = "worker: stopped: an output could not be stored"


def _exits_within(worker: WorkerProcess, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while worker.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return not worker.alive()


async def _max_message_bytes(bootstrap: str, topic: str, value: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": str(value)})]
        )
    finally:
        await admin.close()


@FORMS
def test_a_rejected_contest_record_stops_the_worker_and_a_restart_applies_it_once(
    tmp_path: Path, kafka_settings: KafkaSettings, topic_settings: TopicSettings, form: str
) -> None:
    bootstrap = kafka_settings.bootstrap_servers
    events = make_events(hubs=3, contests_per_hub=30, span_ms=120_000, seed=29)
    ref = reference_windows(events)
    finished = sum(1 for e in events if e["message"] in (P + "resolved", P + "workflowFailed"))
    asyncio.run(_max_message_bytes(bootstrap, topic_settings.records, 64))
    app_id = f"ct-test-{topic_settings.events}"

    def worker(name: str, **env: object) -> WorkerProcess:
        return WorkerProcess(
            bootstrap, topic_settings, app_id, tmp_path / f"data-{name}", tmp_path / f"{name}.log", **env
        )

    first, second = worker("first", apply_retry_s=2), worker("second")
    try:
        first.start()
        asyncio.run(produce(bootstrap, topic_settings.events, as_records(events, form, per=10)))
        asyncio.run(
            produce(
                bootstrap,
                topic_settings.events,
                tick_records(topic_settings.partitions),
                partition_of=lambda i: i,
            )
        )
        deadline = time.monotonic() + 120
        while STOPPED not in first.log() and first.alive():
            assert time.monotonic() < deadline, "no stop on a rejected send\n" + first.log()
            time.sleep(0.5)
        code = first.proc.poll() if first.proc is not None else None
        assert STOPPED in first.log(), f"no stop on a rejected send (exit {code})\n" + first.log()
        assert "MessageSizeTooLarge" in first.log(), first.log()
        exited = _exits_within(first, 20.0)
        first.stop()  # SIGTERM, then SIGKILL: a hung process counts as crashed from here

        asyncio.run(
            _max_message_bytes(bootstrap, topic_settings.records, topic_settings.output_max_message_bytes)
        )
        second.start()
        values = _wait_windows(
            bootstrap, topic_settings.windows, expected_ids(ref, 2), second.alive, timeout=120
        )
        time.sleep(1.0)
        problems = check_all(results_of(values), ref)  # every event applied once, none skipped
        assert problems == [], "\n".join(problems[:20]) + "\n" + second.log()
        got = asyncio.run(consume(bootstrap, topic_settings.records, count=finished, timeout=60, idle=3.0))
        records = [orjson.loads(r.value) for r in got]
        # None reached the topic before the restart: each contest record exactly once after it.
        assert len(records) == len({r["eventId"] for r in records}) == finished, second.log()
        assert second.alive(), second.log()
        # faust's consumer thread (a non-daemon mode ServiceThread) can outlive the fatal stop;
        # the worker exits anyway within CT_WORKER_EXIT_GRACE_S (10 s).
        assert exited, first.log()
        assert first.proc is not None and first.proc.returncode == 1, first.log()
    finally:
        first.stop()
        second.stop()
