"""Brokers this project can start: real Apache Kafka (KRaft, from Maven jars) and embedded Tansu."""

from __future__ import annotations

from contest_telemetry.broker.apache import ApacheKafkaBroker, kafka_version, resolve_kafka_libs
from contest_telemetry.broker.embedded import TansuBroker
from contest_telemetry.broker.exceptions import BrokerError, BrokerStartError, BrokerUnavailableError
from contest_telemetry.broker.process import BrokerProcess, free_port
from contest_telemetry.broker.readiness import probe_idempotence, wait_ready

__all__ = [
    "ENGINES",
    "ApacheKafkaBroker",
    "BrokerError",
    "BrokerProcess",
    "BrokerStartError",
    "BrokerUnavailableError",
    "TansuBroker",
    "free_port",
    "kafka_version",
    "make_broker",
    "probe_idempotence",
    "resolve_kafka_libs",
    "wait_ready",
]

ENGINES = ("kafka", "embedded")


def make_broker(engine: str, **kwargs: object) -> BrokerProcess:
    if engine == "kafka":
        return ApacheKafkaBroker(**kwargs)  # type: ignore[arg-type]
    if engine == "embedded":
        return TansuBroker(**kwargs)  # type: ignore[arg-type]
    raise BrokerUnavailableError(f"unknown broker engine {engine!r} (choose from {', '.join(ENGINES)})")
