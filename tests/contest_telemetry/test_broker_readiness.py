"""contest_telemetry/broker/readiness.py on a real broker: the readiness round trip leaves no
probe topic behind and logs no error for a broker that is ready."""

from __future__ import annotations

import logging

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from contest_telemetry.broker.readiness import wait_ready
from tests.conftest import KafkaTarget, run_sync


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_a_ready_broker_gives_no_error_and_keeps_no_probe_topic(
    kafka_broker: KafkaTarget, caplog: pytest.LogCaptureFixture
) -> None:
    before = run_sync(_topics(kafka_broker.bootstrap))
    with caplog.at_level(logging.INFO):
        waited = wait_ready(kafka_broker.bootstrap, timeout=60)
    assert waited >= 0
    left = {t for t in run_sync(_topics(kafka_broker.bootstrap)) - before if t.startswith("__ct_ready_")}
    assert left == set()
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == [], [r.getMessage() for r in noisy]
