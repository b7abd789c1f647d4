from __future__ import annotations

import pytest
from pydantic import ValidationError

from contest_telemetry.settings import KafkaSettings, TopicSettings, settings_error_line
from producers.settings import PublisherSettings


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env-host:9092")
    monkeypatch.setenv("CT_TOPIC_PARTITIONS", "8")
    assert KafkaSettings().bootstrap_servers == "env-host:9092"
    assert TopicSettings().partitions == 8


def test_init_values_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env-host:9092")
    monkeypatch.setenv("CT_PUBLISHER_OVERFLOW", "wait")
    assert KafkaSettings(bootstrap_servers="init-host:9092").bootstrap_servers == "init-host:9092"
    assert PublisherSettings(overflow="drop").overflow == "drop"


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    settings = KafkaSettings(sasl_mechanism="PLAIN", sasl_username="u", security_protocol="SASL_SSL")
    assert "hunter2" not in repr(settings)
    assert settings.aiokafka_kwargs()["sasl_plain_password"] == "hunter2"


def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CT_PUBLISHER_BUFFER_SIZE", "zero")
    with pytest.raises(ValidationError) as info:
        PublisherSettings()
    line = settings_error_line(info.value)
    assert line.startswith("invalid setting CT_PUBLISHER_BUFFER_SIZE='zero': ")
    assert "\n" not in line
