"""The worker on a SASL listener: faust's clients, the topic admin and the range reader all
authenticate with the KAFKA_* settings (an Apache Kafka broker of its own with a PLAIN listener)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from contest_telemetry.settings import KafkaSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics
from tests.helpers.kafka import unique_topics
from tests.helpers.streams_reference import check_all, make_events, reference_windows
from tests.helpers.streams_worker import WorkerProcess, collect
from tests.streams.engine_harness import envelopes
from tests.streams.test_worker_kafka import expected_ids, results_of, tick_records

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (shutil.which("java") and shutil.which("mvn")), reason="Apache Kafka needs java and mvn"
    ),
]

USER, PASSWORD = "ct-worker", "ct-secret"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from contest_telemetry.broker import ApacheKafkaBroker

    broker = ApacheKafkaBroker(
        data_dir=tmp_path_factory.mktemp("sasl-kafka"), sasl_users={USER: PASSWORD}
    ).start()
    try:
        yield broker
    finally:
        broker.stop()


def _sasl(broker: object, password: str = PASSWORD) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{broker.sasl_port}",  # type: ignore[attr-defined]
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=USER,
        sasl_password=password,
    )


async def _produce(
    kafka: KafkaSettings,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    partition: int | None = None,
) -> None:
    producer = AIOKafkaProducer(**kafka.aiokafka_kwargs(), acks="all")  # type: ignore[arg-type]
    try:
        await producer.start()
        await asyncio.gather(*[await producer.send(topic, v, key=k, partition=partition) for k, v in records])
    finally:
        await producer.stop()


def test_a_wrong_password_is_refused(sasl_broker: object) -> None:
    """The listener really authenticates (so the test below proves the worker does too)."""
    with pytest.raises(KafkaError):
        asyncio.run(_produce(_sasl(sasl_broker, "wrong"), "nowhere", [(None, b"x")]))


def test_worker_processes_over_sasl(
    sasl_broker: object, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = _sasl(sasl_broker)
    topics = unique_topics(unique)
    asyncio.run(ensure_topics(kafka, pipeline_topics(topics)))
    events = make_events(hubs=3, contests_per_hub=60, span_ms=200_000, seed=3)
    ref = reference_windows(events)
    recs: list[tuple[bytes | None, bytes]] = [(h.encode(), v) for h, v in envelopes(events, per=20)]
    for key, value in kafka.model_dump(exclude_none=True).items():
        if key in ("security_protocol", "sasl_mechanism", "sasl_username"):
            monkeypatch.setenv(f"KAFKA_{key.upper()}", str(value))
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", PASSWORD)
    worker = WorkerProcess(
        kafka.bootstrap_servers, topics, f"ct-sasl-{unique}", tmp_path / "data", tmp_path / "w.log"
    ).start()
    try:
        asyncio.run(_produce(kafka, topics.events, recs))
        for partition, (key, value) in enumerate(tick_records(topics.partitions)):
            # one tick per partition pushes its watermark past every window
            asyncio.run(_produce(kafka, topics.events, [(key, value)], partition=partition))
        # Results are read on the broker's PLAINTEXT listener (the test's own client).
        plain = f"127.0.0.1:{sasl_broker.port}"  # type: ignore[attr-defined]
        want = expected_ids(ref, topics.partitions)
        seen: set[str] = set()

        def done(values: list[dict[str, object]]) -> bool:
            seen.update(str(v["windowId"]) for v in values)
            return want <= seen

        values = asyncio.run(collect(plain, topics.windows, done, timeout=180, alive=worker.alive))
        time.sleep(0.5)
        problems = check_all(results_of(values), ref)
        assert problems == [], "\n".join(problems[:20]) + worker.log()
    finally:
        worker.stop()
