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


def test_tls_protocols_get_a_verifying_ssl_context() -> None:
    import ssl

    plain = KafkaSettings()
    assert plain.ssl_context() is None and "ssl_context" not in plain.aiokafka_kwargs()
    assert plain.faust_credentials() is None
    tls = KafkaSettings(security_protocol="SSL")
    ctx = tls.aiokafka_kwargs()["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    creds = tls.faust_credentials()
    assert type(creds).__name__ == "SSLCredentials" and isinstance(creds.context, ssl.SSLContext)


def test_sasl_reaches_faust_with_the_same_values() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="u", sasl_password="pw"
    )
    faust_side = credentials_to_aiokafka_auth(settings.faust_credentials())
    ours = settings.aiokafka_kwargs()
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert faust_side[key] == ours[key], key
    assert isinstance(faust_side["ssl_context"], type(ours["ssl_context"]))
    plain = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="pw"
    )
    assert credentials_to_aiokafka_auth(plain.faust_credentials())["security_protocol"] == "SASL_PLAINTEXT"


def test_incomplete_sasl_is_one_line_without_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "hunter2")
    with pytest.raises(ValidationError) as info:
        KafkaSettings()
    line = settings_error_line(info.value)
    assert line == (
        "invalid setting KAFKA: security_protocol SASL_SSL needs sasl_mechanism, sasl_username and sasl_password"
    )
    monkeypatch.delenv("KAFKA_SECURITY_PROTOCOL")
    with pytest.raises(ValidationError) as info:
        KafkaSettings(sasl_mechanism="PLAIN", sasl_username="u")  # a mechanism without a SASL protocol
    assert "needs a SASL security_protocol, not PLAINTEXT" in settings_error_line(info.value)
