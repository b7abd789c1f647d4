from __future__ import annotations

import ssl
from pathlib import Path

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


# -- bad values fail when settings load, with one line naming the variable ----------------------
def _line(cls: type, **env_or_kwargs: object) -> str:
    with pytest.raises(ValidationError) as info:
        cls(**env_or_kwargs)
    line = settings_error_line(info.value)
    assert "\n" not in line and "Value error" not in line, line
    return line


def test_the_ca_file_is_checked_when_settings_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", "/nope")
    assert _line(KafkaSettings) == "invalid setting KAFKA_SSL_CAFILE='/nope': no such file"
    monkeypatch.setenv("KAFKA_SSL_CAFILE", str(tmp_path))
    assert _line(KafkaSettings).endswith(": not a file")
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    monkeypatch.setenv("KAFKA_SSL_CAFILE", str(junk))
    assert f"KAFKA_SSL_CAFILE='{junk}': not a readable PEM CA bundle" in _line(KafkaSettings)
    bundle = ssl.get_default_verify_paths().cafile
    if bundle and Path(bundle).is_file():
        monkeypatch.setenv("KAFKA_SSL_CAFILE", bundle)
        assert KafkaSettings().ssl_cafile == Path(bundle)


@pytest.mark.parametrize(
    "servers,ok",
    [
        ("127.0.0.1:9092", True),
        ("a:1,b:65535, c:9093", True),
        ("broker", True),
        ("[::1]:9092,[::1],::1", True),
        ("127.0.0.1:abc", False),
        ("host:0", False),
        ("host:99999", False),
        ("", False),
        ("a:1,,b:2", False),
        (":9092", False),
        ("[::1]9092", False),
    ],
)
def test_bootstrap_servers_are_host_port_lists(servers: str, ok: bool) -> None:
    if ok:
        assert KafkaSettings(bootstrap_servers=servers).bootstrap_servers == servers
    else:
        assert _line(KafkaSettings, bootstrap_servers=servers).startswith(
            f"invalid setting KAFKA_BOOTSTRAP_SERVERS={servers!r}: a comma-separated host:port list"
        )


@pytest.mark.parametrize("name", ["", "a b", "x" * 250, "..", "events/dlq"])
def test_topic_names_are_kafka_topic_names(name: str) -> None:
    assert _line(TopicSettings, dlq=name).startswith(
        f"invalid setting CT_TOPIC_DLQ={name!r}: a Kafka topic name"
    )


@pytest.mark.parametrize(
    "env,value,why",
    [
        ("CT_WORKER_WINDOW_S", "0.0001", "at least 0.001 s"),  # rounds to 0 ms: divided by zero
        ("CT_WORKER_WINDOW_S", "0.0004", "at least 0.001 s"),
        ("CT_WORKER_WINDOW_S", "1e300", "at most 253402300799 s"),
        ("CT_WORKER_LIFECYCLE_TTL_S", "inf", "finite number"),  # overflowed int(inf * 1000)
        ("CT_WORKER_LIFECYCLE_TTL_S", "0.0001", "at least 0.001 s"),
        ("CT_WORKER_GRACE_S", "nan", "finite number"),
        ("CT_WORKER_GRACE_S", "1e300", "at most"),
        ("CT_WORKER_ALPHA", "1e-300", "at least 1e-06"),  # DDSketch's gamma rounds to 1: log(1) = 0
        ("CT_WORKER_STALL_S", "inf", "finite number"),
        ("CT_WORKER_PRODUCER_ACKS", "2", "-1 (all), 0 or 1"),
        ("CT_WORKER_PRODUCER_MAX_BATCH_BYTES", "2097152", "less than or equal to 1048576"),
        ("CT_WORKER_PRODUCER_MAX_BATCH_BYTES", "1024", "greater than or equal to 16384"),
        ("CT_WORKER_LOGLEVEL", "loud", "debug, info, warn, error or critical"),
        ("CT_WORKER_WEB_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_worker_values_that_failed_later_fail_when_settings_load(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, why: str
) -> None:
    from streams.settings import WorkerSettings

    monkeypatch.setenv(env, value)
    line = _line(WorkerSettings)
    assert line.startswith(f"invalid setting {env}={value!r}: ") and why in line, line


def test_worker_boundaries_are_accepted() -> None:
    from streams.settings import WorkerSettings

    s = WorkerSettings(window_s=0.001, lifecycle_ttl_s=0.001, grace_s=0, alpha=1e-6, loglevel="WARNING")
    assert (s.window_ms, s.ttl_ms, s.grace_ms) == (1, 1, 0)


def _float_fields() -> list[tuple[type, str]]:
    from sinks.prometheus.settings import ExporterSettings
    from streams.settings import EventTimeSettings, WorkerSettings

    classes = [
        KafkaSettings,
        TopicSettings,
        PublisherSettings,
        WorkerSettings,
        EventTimeSettings,
        ExporterSettings,
    ]
    return [
        (cls, name)
        for cls in classes
        for name, info in cls.model_fields.items()
        if info.annotation in (float, float | None)
    ]


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize("cls,name", _float_fields(), ids=lambda v: getattr(v, "__name__", v))
def test_every_float_setting_is_finite(
    monkeypatch: pytest.MonkeyPatch, cls: type, name: str, value: str
) -> None:
    env = f"{cls.model_config['env_prefix']}{name.upper()}"
    monkeypatch.setenv(env, value)
    assert _line(cls).startswith(f"invalid setting {env}={value!r}: "), env


def test_float_fields_are_found() -> None:
    names = {f"{cls.__name__}.{name}" for cls, name in _float_fields()}
    assert {
        "WorkerSettings.window_s",
        "WorkerSettings.lifecycle_ttl_s",
        "KafkaSettings.connect_timeout_s",
    } <= names


def test_no_float_setting_of_any_stage_takes_inf_or_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every settings class (found the way the README's table is generated): a float set to inf,
    -inf or nan is refused when the settings load."""
    import typing

    from pydantic import ValidationError

    from scripts.settings_doc import settings_classes

    checked = 0
    for cls in settings_classes():
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, info in cls.model_fields.items():
            if float not in (info.annotation, *typing.get_args(info.annotation)):
                continue
            for bad in ("inf", "-inf", "nan"):
                monkeypatch.setenv(f"{prefix}{name.upper()}", bad)
                with pytest.raises(ValidationError):
                    cls()
                monkeypatch.delenv(f"{prefix}{name.upper()}")
                checked += 1
    assert checked >= 3 * 15  # 19 float settings today


def test_max_request_bytes_covers_every_topic_limit() -> None:
    from contest_telemetry.settings import MAX_REQUEST_BYTES, max_request_bytes

    assert max_request_bytes() == MAX_REQUEST_BYTES
    assert max_request_bytes(1024) == MAX_REQUEST_BYTES
    assert max_request_bytes(2 * MAX_REQUEST_BYTES, 3) == 2 * MAX_REQUEST_BYTES


def test_ingested_topic_limit_is_a_setting_the_ingest_stage_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.exceptions import StreamsConfigError
    from streams.ingest import IngestStage
    from streams.settings import IngestSettings

    monkeypatch.setenv("CT_TOPIC_INGESTED_MAX_MESSAGE_BYTES", str(1024 * 1024))
    topics = TopicSettings()
    assert topics.ingested_max_message_bytes == 1024 * 1024
    with pytest.raises(StreamsConfigError, match="CT_INGEST_MAX_BATCH_BYTES"):
        IngestStage(KafkaSettings(), topics, IngestSettings(max_batch_bytes=600_000))
    IngestStage(KafkaSettings(), topics, IngestSettings(max_batch_bytes=500_000))
