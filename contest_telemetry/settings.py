"""Settings shared by every stage: how to reach Kafka and what the topics are called.

Each concern has one typed settings class with its own env prefix; stage-specific settings live
next to their stage (``producers/settings.py``, ``streams/settings.py``, ``sinks/*/settings.py``).
Values passed to the constructor win over the environment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSettings", "TopicSettings"]


class KafkaSettings(BaseSettings):
    """Connection to the Kafka cluster (env prefix ``KAFKA_``)."""

    model_config = SettingsConfigDict(env_prefix="KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list; the demo starts an embedded broker when unset.",
    )
    client_id: str = "contest-telemetry"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

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

    events: str = "contest.events"
    dlq: str = "contest.events.dlq"
    records: str = "contest.records"
    windows: str = "contest.windows"
    partitions: int = Field(default=4, ge=1, description="Partitions of contest.events (and its outputs).")
    replication_factor: int = Field(default=1, ge=1)
