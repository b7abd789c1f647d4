"""Settings of the Prometheus exporter (env prefix ``CT_EXPORTER_``)."""

from __future__ import annotations

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from contest_telemetry.exceptions import ConfigError

__all__ = ["ExporterSettings"]


class ExporterSettings(BaseSettings):
    """Where a worker serves ``/metrics`` and how many ``hub`` label values it may emit.

    ``CT_EXPORTER_HOST`` (default ``127.0.0.1``), ``CT_EXPORTER_PORT`` (default 9464, 0 = pick a free
    port), ``CT_EXPORTER_MAX_HUBS`` (default 500: further hubs fold into ``hub="_other"``),
    ``CT_EXPORTER_MAX_LABEL_LENGTH`` (default 128: longer hub ids are truncated with a hash suffix),
    ``CT_EXPORTER_ENABLED`` (default true: the worker starts the exporter).
    """

    model_config = SettingsConfigDict(env_prefix="CT_EXPORTER_", extra="ignore", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="Serve /metrics from the worker.")
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind.")
    port: int = Field(default=9464, ge=0, le=65535, description="TCP port; 0 picks a free port.")
    max_hubs: int = Field(
        default=500, ge=1, description="Distinct hub label values before further hubs fold into _other."
    )
    max_label_length: int = Field(
        default=128,
        ge=32,
        le=4096,
        description="Longer hub ids are cut and suffixed with a hash of the full id (stays distinct).",
    )
    hub_idle_scrapes: int = Field(
        default=40,
        ge=1,
        description="Scrapes without use before a hub's label slot is freed for another hub.",
    )
    threads: int = Field(
        default=4, ge=1, le=64, description="Threads answering /metrics; waiting connections use none."
    )
    request_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Time a connection has to send its request head, and a response to be sent.",
    )
    max_connections: int = Field(
        default=256,
        ge=1,
        le=65536,
        description="Connections waiting for their request head; beyond it the oldest is closed.",
    )

    @classmethod
    def load(cls, **overrides: object) -> ExporterSettings:
        """Environment + ``overrides``; an invalid value raises :class:`ConfigError` (one line)."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"CT_EXPORTER_{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"invalid exporter settings: {problems}") from exc
