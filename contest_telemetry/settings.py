"""Settings shared by every stage: how to reach Kafka, what the topics are called and whether
events are checked by the schema's fast path.

Each concern has one typed settings class with its own env prefix; stage-specific settings live
next to their stage (``producers/settings.py``, ``streams/settings.py``, ``sinks/*/settings.py``).
Values passed to the constructor win over the environment.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEFAULT_DLQ_MAX_BYTES",
    "DEFAULT_OUTPUT_MAX_MESSAGE_BYTES",
    "FastPathSettings",
    "KafkaSettings",
    "TopicSettings",
    "settings_class",
    "settings_error_line",
]

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# Dead letters are cut at 1 MiB (streams/dlq.py); the output topics are created with room for one
# plus its key (the source record's, up to the input topic's limit) and headers.
DEFAULT_DLQ_MAX_BYTES = 1024 * 1024
DEFAULT_OUTPUT_MAX_MESSAGE_BYTES = 2 * 1024 * 1024
DEFAULT_INGESTED_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Every producer's max_request_size, at least: above any record it sends with the defaults (an
ingested record, a dead letter, a publisher envelope). A topic limit set higher raises it for the
producers writing that topic (:func:`max_request_bytes`)."""


def max_request_bytes(*message_limits: int) -> int:
    """A producer's max_request_size for topics of these ``max.message.bytes``."""
    return max((MAX_REQUEST_BYTES, *message_limits))


def _check_host_port(entry: str) -> str | None:
    """Why one ``host:port`` of a bootstrap list is wrong, or None (aiokafka's forms: ``host``,
    ``host:port``, ``[ipv6]``, ``[ipv6]:port``, a bare IPv6 address; the port defaults to 9092)."""
    if not entry:
        return "an empty host"
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            return f"{entry!r} is not [ipv6] or [ipv6]:port"
        port = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
        if not host:
            return f"{entry!r} has no host"
    else:
        return None  # a host name, or a bare IPv6 address
    if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"{entry!r}: the port must be 1-65535"
    return None


class KafkaSettings(BaseSettings):
    """Connection to the Kafka cluster (env prefix ``KAFKA_``)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore", allow_inf_nan=False)

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list; the demo starts an embedded broker when unset.",
    )
    client_id: str = Field(
        default="contest-telemetry",
        min_length=1,
        description="Client id the brokers see in their logs and quotas.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that signed the brokers' certificates, with SSL or SASL_SSL; default: the system's CAs.",
    )
    connect_timeout_s: float = Field(
        default=12.0,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description="How long a command keeps trying to reach the brokers when it starts before it "
        "stops with one line (worker, ingest, loadgen, archive run).",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        for entry in value.strip().split(","):
            problem = _check_host_port(entry.strip())
            if problem is not None:
                raise ValueError(f"a comma-separated host:port list: {problem}")
        return value

    @field_validator("ssl_cafile")
    @classmethod
    def _check_cafile(cls, value: Path | None) -> Path | None:
        """The CA bundle must be a readable PEM file now, not when the first TLS connection is made."""
        if value is None:
            return value
        if not value.is_file():
            raise ValueError("no such file" if not value.exists() else "not a file")
        try:
            ssl.create_default_context(cafile=str(value))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ValueError(f"not a readable PEM CA bundle ({reason})") from None
        return value

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        if not sasl and self.sasl_mechanism:
            raise ValueError(f"sasl_mechanism needs a SASL security_protocol, not {self.security_protocol}")
        return self

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for SSL / SASL_SSL (None for plaintext): verifies the brokers' certificates
        against ``ssl_cafile`` or the system's CAs, and their host names."""
        if not self.uses_tls:
            return None
        return ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)

    def aiokafka_kwargs(self) -> dict[str, object]:
        """Keyword arguments understood by every aiokafka client."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs

    def faust_credentials(self) -> Any:
        """The same connection security as faust ``broker_credentials`` (None for PLAINTEXT)."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.sasl_mechanism:
            return SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password.get_secret_value() if self.sasl_password else None,
                mechanism=self.sasl_mechanism,
                ssl_context=self.ssl_context(),
            )
        if self.uses_tls:
            return SSLCredentials(self.ssl_context())
        return None


class TopicSettings(BaseSettings):
    """Topic names and layout (env prefix ``CT_TOPIC_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_TOPIC_", extra="ignore", allow_inf_nan=False)

    events: str = Field(
        default="contest.events", description="Hub events in (single events or envelopes), keyed by hubId."
    )
    dlq: str = Field(
        default="contest.events.dlq",
        description="Dead letters: records or events that failed decoding or validation, with the reason.",
    )
    records: str = Field(
        default="contest.records", description="One record per finished contest, with its joined lifecycle."
    )
    windows: str = Field(default="contest.windows", description="One final result per closed window and hub.")
    ingested: str = Field(
        default="contest.events.ingested",
        description="Internal: validated events packed per hub by the ingest stage, read by the worker.",
    )
    partitions: int = Field(default=4, ge=1, description="Partitions of contest.events (and its outputs).")
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of topics this project creates."
    )
    output_max_message_bytes: int = Field(
        default=DEFAULT_OUTPUT_MAX_MESSAGE_BYTES,
        ge=128 * 1024,
        le=1024 * 1024 * 1024,
        description="max.message.bytes of the dead-letter, records and windows topics when this project "
        "creates them (existing topics are left as they are); keep it above CT_TOPIC_DLQ_MAX_BYTES.",
    )
    ingested_max_message_bytes: int = Field(
        default=DEFAULT_INGESTED_MAX_MESSAGE_BYTES,
        ge=1024 * 1024,
        le=1024 * 1024 * 1024,
        description="max.message.bytes of the ingested topic when this project creates it. A packed record "
        "is at most CT_INGEST_MAX_BATCH_BYTES, but one source record is never split and its normalised "
        "events run up to ~1.5x its size; the ingest stage refuses to start with a batch size of more "
        "than half of this.",
    )
    dlq_max_bytes: int = Field(
        default=DEFAULT_DLQ_MAX_BYTES,
        ge=64 * 1024,
        description="Largest dead-letter value: beyond it the payload is replaced by its size, sha256 and "
        "first 4 KiB (payloadTruncated, counted in contest_dlq_payloads_truncated_total). Must be below "
        "CT_TOPIC_OUTPUT_MAX_MESSAGE_BYTES, which also holds the record's key and headers.",
    )

    @model_validator(mode="after")
    def _dlq_fits(self) -> TopicSettings:
        if self.dlq_max_bytes >= self.output_max_message_bytes:
            raise ValueError(
                f"CT_TOPIC_DLQ_MAX_BYTES ({self.dlq_max_bytes}) must be below "
                f"CT_TOPIC_OUTPUT_MAX_MESSAGE_BYTES ({self.output_max_message_bytes}): a cut dead letter "
                "must fit the dead-letter topic with its key and headers"
            )
        return self

    @field_validator("events", "dlq", "records", "windows", "ingested")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError("a Kafka topic name: 1-249 of the characters A-Z a-z 0-9 . _ -")
        return value

    def as_env(self) -> dict[str, str]:
        """These settings as the environment of a child process (``CT_TOPIC_EVENTS``, ...)."""
        prefix = str(self.model_config.get("env_prefix", ""))
        return {f"{prefix}{name.upper()}": str(getattr(self, name)) for name in type(self).model_fields}


class FastPathSettings(BaseSettings):
    """Checking events without pydantic (env prefix ``CT_FAST_PATH_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_FAST_PATH_", extra="ignore", allow_inf_nan=False)

    enabled: bool = Field(
        default=True,
        description="Accept well-formed events by the schema's rules without pydantic (the ingest stage's "
        "and the worker's decoder, the publisher's check; contest_telemetry/schema/fastpath.py). false "
        "validates every event with pydantic, the reference path: same results, more CPU. Read once per "
        "process.",
    )


def settings_class(exc: ValidationError) -> type[BaseSettings] | None:
    """The settings class ``exc`` is about, or None when it is about another model (a bug, not a
    setting the user can fix). ``exc.title`` names the class."""
    classes: list[type[BaseSettings]] = list(BaseSettings.__subclasses__())
    while classes:
        cls = classes.pop()
        if cls.__name__ == exc.title:
            return cls
        classes.extend(cls.__subclasses__())
    return None


def settings_error_line(exc: ValidationError) -> str:
    """One line naming the environment variable (or flag) that is wrong and why.

    ``exc.title`` is the settings class; its env prefix turns ``window_s`` into ``CT_WORKER_WINDOW_S``.
    """
    cls = settings_class(exc)
    prefix = "" if cls is None else str(cls.model_config.get("env_prefix", ""))
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not field:
            # A check across fields: its input is every value, secrets included, so only the message.
            parts.append(f"{prefix.rstrip('_') or exc.title}: {message}")
            continue
        name = f"{prefix}{field.upper()}" if prefix else field
        value = error.get("input")
        shown = "<secret>" if isinstance(value, SecretStr) or "password" in field else repr(value)
        parts.append(f"{name}={shown}: {message}")
    return "invalid setting " + " ".join("; ".join(parts).split())
