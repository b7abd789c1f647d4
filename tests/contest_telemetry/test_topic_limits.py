"""The dead-letter cut and the output topics' message limit (issue 11, gap 3): both settings, the
invariant between them checked when the settings load, and the limit on topics a real broker
created."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import ValidationError

from contest_telemetry.settings import (
    DEFAULT_DLQ_MAX_BYTES,
    DEFAULT_OUTPUT_MAX_MESSAGE_BYTES,
    KafkaSettings,
    TopicSettings,
    settings_error_line,
)
from contest_telemetry.topics import ensure_topics, pipeline_topics
from streams.dlq import MAX_DLQ_BYTES
from tests.conftest import run_sync
from tests.helpers.kafka import unique_topics

MiB = 1024 * 1024


def test_defaults_are_a_one_mib_cut_under_a_two_mib_topic_limit():
    topics = TopicSettings()
    assert (topics.dlq_max_bytes, topics.output_max_message_bytes) == (MiB, 2 * MiB)
    assert MAX_DLQ_BYTES == DEFAULT_DLQ_MAX_BYTES == MiB
    assert 2 * MiB == DEFAULT_OUTPUT_MAX_MESSAGE_BYTES
    limits = {s.name: s.config.get("max.message.bytes") for s in pipeline_topics(topics)}
    assert limits[topics.dlq] == limits[topics.records] == limits[topics.windows] == str(2 * MiB)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CT_TOPIC_DLQ_MAX_BYTES": str(2 * MiB)}, "CT_TOPIC_DLQ_MAX_BYTES (2097152) must be below"),
        (
            {"CT_TOPIC_OUTPUT_MAX_MESSAGE_BYTES": str(MiB)},
            "CT_TOPIC_OUTPUT_MAX_MESSAGE_BYTES (1048576)",
        ),
        ({"CT_TOPIC_DLQ_MAX_BYTES": "1000"}, "CT_TOPIC_DLQ_MAX_BYTES='1000'"),
    ],
)
def test_a_cut_that_does_not_fit_the_topic_fails_at_load_with_one_line(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as caught:
        TopicSettings()
    line = settings_error_line(caught.value)
    assert "\n" not in line and line.startswith("invalid setting ")
    assert named in line, line


def test_a_larger_cut_under_a_larger_limit_is_accepted(monkeypatch):
    monkeypatch.setenv("CT_TOPIC_DLQ_MAX_BYTES", str(3 * MiB))
    monkeypatch.setenv("CT_TOPIC_OUTPUT_MAX_MESSAGE_BYTES", str(4 * MiB))
    topics = TopicSettings()
    assert (topics.dlq_max_bytes, topics.output_max_message_bytes) == (3 * MiB, 4 * MiB)
    assert "CT_TOPIC_DLQ_MAX_BYTES" in topics.as_env()  # a child process (the ingest stage) gets it


async def _max_message_bytes(kafka: KafkaSettings, names: list[str]) -> dict[str, str]:
    admin = AIOKafkaAdminClient(**kafka.aiokafka_kwargs())  # type: ignore[arg-type]
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    found: dict[str, str] = {}
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            assert error_code == 0, (name, error_code)
            for entry in entries:
                if entry[0] == "max.message.bytes":
                    found[name] = entry[1]
    return found


@pytest.mark.kafka
def test_created_output_topics_carry_the_configured_max_message_bytes(kafka_settings, unique):
    base = unique_topics(unique)
    topics = TopicSettings(
        **{**base.model_dump(), "output_max_message_bytes": 3 * MiB, "dlq_max_bytes": 2 * MiB}
    )
    run_sync(ensure_topics(kafka_settings, pipeline_topics(topics)))
    found = run_sync(
        _max_message_bytes(kafka_settings, [topics.dlq, topics.records, topics.windows, topics.ingested])
    )
    assert found == {
        topics.dlq: str(3 * MiB),
        topics.records: str(3 * MiB),
        topics.windows: str(3 * MiB),
        topics.ingested: str(4 * MiB),
    }
