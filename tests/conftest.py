"""One broker for the whole test session, and uuid-named topics and groups per test.

Which broker (first that applies; ``CT_TEST_BROKER=kafka|embedded|testcontainers`` forces one):
1. ``KAFKA_BOOTSTRAP_SERVERS`` when set (an external cluster);
2. testcontainers' Kafka when a Docker engine answers;
3. Apache Kafka from the Maven jars when Java and Maven exist;
4. the embedded Tansu broker.
Tests marked ``apache_kafka`` need what Tansu lacks (idempotent producers, ...) and are skipped
there with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from contest_telemetry.broker import ApacheKafkaBroker, BrokerProcess, TansuBroker, probe_idempotence
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import TopicSpec, ensure_topics, pipeline_topics
from tests.helpers.kafka import unique_topics

# Archivers that tests start serve their exporter on a free port, never on the default 9465 that
# another run on this machine may hold (workers get CT_EXPORTER_PORT=0 from their helpers).
os.environ.setdefault("CT_ARCHIVER_EXPORTER_PORT", "0")


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running event loop (async tests
    call fixture factories from their loop), on a private loop in a helper thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class KafkaTarget:
    bootstrap: str
    engine: str  # external | testcontainers | kafka | embedded
    idempotence: bool
    process: BrokerProcess | None = None

    @property
    def is_tansu(self) -> bool:
        return self.engine == "embedded" or not self.idempotence


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _choose_engine() -> str:
    forced = os.environ.get("CT_TEST_BROKER", "").strip().lower()
    if forced:
        return forced
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return "external"
    if _docker_answers():
        return "testcontainers"
    if shutil.which("java") and shutil.which("mvn"):
        return "kafka"
    return "embedded"


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaTarget]:
    engine = _choose_engine()
    container: Any = None
    process: BrokerProcess | None = None
    if engine == "external":
        bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif engine == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer().with_kraft()
        container.start()
        bootstrap = container.get_bootstrap_server()
    elif engine == "kafka":
        process = ApacheKafkaBroker().start()
        bootstrap = process.bootstrap
    elif engine == "embedded":
        process = TansuBroker().start()
        bootstrap = process.bootstrap
    else:
        raise pytest.UsageError(f"CT_TEST_BROKER={engine!r}: choose kafka, embedded, testcontainers")
    if os.environ.get("CI") and engine == "embedded":
        raise RuntimeError("CI must test against Apache Kafka; the embedded broker was selected")
    idempotence = run_sync(probe_idempotence(bootstrap))
    try:
        yield KafkaTarget(bootstrap, engine, idempotence, process)
    finally:
        if process is not None:
            process.stop()
        if container is not None:
            container.stop()


def pytest_report_header(config: pytest.Config) -> str:
    return f"contest-telemetry test broker: {_choose_engine()}"


@pytest.fixture
def require_apache_kafka(kafka_broker: KafkaTarget) -> None:
    if kafka_broker.is_tansu:
        pytest.skip(
            f"needs Apache Kafka features the {kafka_broker.engine} broker lacks "
            "(idempotent producers / InitProducerId)"
        )


@pytest.fixture
def unique() -> str:
    """A fresh suffix for this test's topics and consumer groups."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def kafka_settings(kafka_broker: KafkaTarget) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_broker.bootstrap)


@pytest.fixture
def topic_settings(kafka_settings: KafkaSettings, unique: str) -> TopicSettings:
    """The pipeline's topics under uuid names, created on the broker."""
    settings = unique_topics(unique)
    run_sync(ensure_topics(kafka_settings, pipeline_topics(settings)))
    return settings


@pytest.fixture
def make_topic(kafka_settings: KafkaSettings, unique: str) -> Callable[..., str]:
    """Create a uuid-named topic: ``make_topic("name", partitions=1)``."""
    counter = iter(range(1_000_000))

    def _make(prefix: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"{prefix}.{unique}.{next(counter)}"
        run_sync(ensure_topics(kafka_settings, [TopicSpec(name, partitions, 1, config or {})]))
        return name

    return _make


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """S3Proxy from its Maven Central jar (tests/helpers/s3proxy.py), one for the session."""
    from tests.helpers.s3proxy import S3Proxy, S3ProxyUnavailable

    proxy = S3Proxy()
    try:
        proxy.start()
    except S3ProxyUnavailable as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no S3 server: {error}")
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def s3_archive(s3_server: Any, unique: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the session's S3 server; the AWS_* variables point at it. Returns
    ``s3://<bucket>/archive``."""
    bucket = f"ct-{unique}"
    s3_server.create_bucket(bucket)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    # Tests stop the server on purpose: fail after a few quick retries, not minutes of backoff.
    monkeypatch.setenv("CT_ARCHIVE_S3_RETRY_BACKOFF_SECONDS", "0.1")
    monkeypatch.setenv("CT_ARCHIVE_S3_MAX_RETRIES", "3")
    return f"s3://{bucket}/archive"
