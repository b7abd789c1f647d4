"""Settings shared by every stage: how to reach Kafka and what the topics are called.

Each concern has one typed settings class with its own env prefix; stage-specific settings live
next to their stage (``producers/settings.py``, ``streams/settings.py``, ``sinks/*/settings.py``).
Values passed to the constructor win over the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings", "TopicSettings", "settings_error_line"]


class KafkaSettings(BaseSettings):
    """Connection to the Kafka cluster (env prefix ``KAFKA_``)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list; the demo starts an embedded broker when unset.",
    )
    client_id: str = Field(
        default="contest-telemetry", description="Client id the brokers see in their logs and quotas."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL protocol)."
    )
    sasl_username: str | None = Field(default=None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (never logged).")

    def aiokafka_kwargs(self) -> dict[str, object]:
        """Keyword arguments understood by every aiokafka client."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return kwargs


class TopicSettings(BaseSettings):
    """Topic names and layout (env prefix ``CT_TOPIC_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_TOPIC_", extra="ignore")

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
    partitions: int = Field(default=4, ge=1, description="Partitions of contest.events (and its outputs).")
    replication_factor: int = Field(
        default=1, ge=1, description="Replication factor of topics this project creates."
    )


def settings_error_line(exc: ValidationError) -> str:
    """One line naming the environment variable (or flag) that is wrong and why.

    ``exc.title`` is the settings class; its env prefix turns ``window_s`` into ``CT_WORKER_WINDOW_S``.
    """
    prefix = ""
    for cls in BaseSettings.__subclasses__():
        if cls.__name__ == exc.title:
            prefix = str(cls.model_config.get("env_prefix", ""))
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"])
        name = f"{prefix}{field.upper()}" if prefix else field
        parts.append(f"{name}={error.get('input')!r}: {error['msg']}")
    return "invalid setting " + "; ".join(parts)
