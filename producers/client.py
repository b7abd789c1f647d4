"""The aiokafka producer the publisher sends with: its options and the idempotence probe.

With ``CT_PUBLISHER_IDEMPOTENCE=auto`` (and ``acks=all``) the producer asks the broker for a
producer id when it starts; a broker that refuses (Tansu) gets a producer with ``acks=all`` and no
ids, and one warning. ``on`` fails instead, ``off`` never asks.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaProducer

from contest_telemetry.logs import quiet_producer_probe
from contest_telemetry.settings import MAX_REQUEST_BYTES, KafkaSettings
from producers.settings import PublisherSettings

__all__ = ["producer_kwargs", "start_producer"]

log = logging.getLogger(__name__)


def producer_kwargs(kafka: KafkaSettings, settings: PublisherSettings, idempotent: bool) -> dict[str, Any]:
    """The aiokafka options of the publisher's producer."""
    acks: int | str = "all" if settings.acks == "all" else int(settings.acks)
    kwargs: dict[str, Any] = {
        **kafka.aiokafka_kwargs(),
        "client_id": kafka.client_id,
        "acks": acks,
        "enable_idempotence": idempotent,
        # Our own linger already batches events into envelopes; the client's linger only
        # needs to gather the envelopes of one flush into one request.
        "linger_ms": min(settings.linger_ms, 5),
        "request_timeout_ms": settings.request_timeout_ms,
        "max_batch_size": 1024 * 1024,
        "max_request_size": MAX_REQUEST_BYTES,
    }
    if settings.compression != "none":
        kwargs["compression_type"] = settings.compression
    return kwargs


async def start_producer(kafka: KafkaSettings, settings: PublisherSettings) -> tuple[AIOKafkaProducer, bool]:
    """A started producer, and whether it is idempotent."""
    mode = settings.idempotence
    want = mode in ("auto", "on") and settings.acks == "all"
    producer = AIOKafkaProducer(**producer_kwargs(kafka, settings, want))
    try:
        with quiet_producer_probe() if mode == "auto" else contextlib.nullcontext():
            await producer.start()
        return producer, want
    except Exception:
        await producer.stop()
        if mode != "auto" or not want:
            raise
    # Brokers such as Tansu refuse InitProducerId; fall back to acks=all without ids.
    log.warning("broker refused an idempotent producer; publishing with acks=all, not idempotent")
    producer = AIOKafkaProducer(**producer_kwargs(kafka, settings, False))
    await producer.start()
    return producer, False
