"""Wait until a Kafka-compatible broker really serves requests, and probe what it supports."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

__all__ = ["port_open", "probe_idempotence", "wait_ready"]

log = logging.getLogger(__name__)


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class _ProbeTopicNotices(logging.Filter):
    """Drops aiokafka's ERROR lines about the probe topic missing from metadata: a topic just
    created reaches the producer's metadata a moment later, and a good start is not an error."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic

    def filter(self, record: logging.LogRecord) -> bool:
        return self.topic not in record.getMessage()


async def _round_trip(bootstrap: str) -> None:
    # A listening port is not enough: a KRaft broker accepts connections before it has a
    # controller. Creating a topic and producing to it proves the whole path works.
    topic = f"__ct_ready_{uuid.uuid4().hex[:8]}"
    notices = _ProbeTopicNotices(topic)
    cluster_log = logging.getLogger("aiokafka.cluster")
    cluster_log.addFilter(notices)
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"ready")
        finally:
            await producer.stop()
    finally:
        cluster_log.removeFilter(notices)
    await _delete_probe_topic(bootstrap, topic)


async def _delete_probe_topic(bootstrap: str, topic: str) -> None:
    """Every start would otherwise leave one more ``__ct_ready_*`` topic on the broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.delete_topics([topic])
    except Exception as exc:  # the broker is ready; a leftover probe topic is only litter
        log.warning("broker readiness: could not delete the probe topic %s: %r", topic, exc)
    finally:
        await admin.close()


def wait_ready(bootstrap: str, timeout: float = 60.0, alive: object = None) -> float:
    """Block until ``bootstrap`` answers a produce round trip; return the seconds waited.

    ``alive`` is an optional zero-argument callable: when it returns False (the process died)
    waiting stops early with TimeoutError.
    """
    started = time.monotonic()
    host, _, port = bootstrap.rpartition(":")
    last_error: BaseException | None = None
    while time.monotonic() - started < timeout:
        if callable(alive) and not alive():
            raise TimeoutError("broker process exited during start")
        if port_open(host, int(port)):
            try:
                asyncio.run(asyncio.wait_for(_round_trip(bootstrap), timeout=15))
                return time.monotonic() - started
            except Exception as exc:  # not ready yet: keep polling until the deadline
                last_error = exc
        time.sleep(0.2)
    raise TimeoutError(f"broker at {bootstrap} not ready after {timeout:.0f}s: {last_error!r}")


async def probe_idempotence(bootstrap: str) -> bool:
    """True when the broker grants producer ids (Apache Kafka does, Tansu does not)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(producer.start(), timeout=15)
    except Exception:
        return False
    finally:
        await producer.stop()
    return True
