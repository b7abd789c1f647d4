"""streams/app.py: what the worker's faust app hands to the aiokafka producer it builds."""

from __future__ import annotations

from contest_telemetry.settings import KafkaSettings, TopicSettings
from streams.app import create_app
from streams.settings import WorkerSettings


def _batch_size(settings: WorkerSettings) -> int:
    app = create_app(settings, KafkaSettings(bootstrap_servers="127.0.0.1:9"), TopicSettings())
    # faust's producer (nothing connects yet) passes this as aiokafka's max_batch_size.
    return int(app.producer.max_batch_size)


def test_the_batch_size_setting_reaches_the_aiokafka_producer() -> None:
    assert _batch_size(WorkerSettings(producer_max_batch_bytes=64 * 1024)) == 64 * 1024


def test_the_default_batch_is_larger_than_fausts() -> None:
    # faust's own default (16 KiB) cost the worker about a quarter of its CPU per event.
    assert _batch_size(WorkerSettings()) == 256 * 1024
