"""Settings of the Prometheus exporter (env prefix ``CT_EXPORTER_``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from sinks.prometheus.labels import DEFAULT_MAX_FOLDED

__all__ = ["ExporterServerSettings", "ExporterSettings", "ServerConnections", "ServerPort", "ServerThreads"]

# The bounds and meaning of the server fields; an exporter that wants other defaults redeclares the
# field with one of these and its own default.
ServerPort = Annotated[int, Field(ge=0, le=65535, description="TCP port; 0 picks a free port.")]
ServerThreads = Annotated[
    int, Field(ge=1, le=64, description="Threads answering requests; waiting connections use none.")
]
ServerConnections = Annotated[
    int,
    Field(
        ge=1,
        le=65536,
        description="Connections waiting for their request head; beyond it the oldest is closed.",
    ),
]


class ExporterServerSettings(BaseSettings):
    """What the HTTP server of sinks/prometheus/server.py reads: where it listens and its bounds.

    A base without an env prefix: each exporter (the worker's :class:`ExporterSettings`, the
    archiver's ``ArchiverExporterSettings``) subclasses it with its own prefix and defaults.
    """

    model_config = SettingsConfigDict(extra="ignore", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="Serve the exporter (the caller's decision).")
    host: str = Field(default="127.0.0.1", min_length=1, description="Address to bind.")
    port: ServerPort = 9464
    threads: ServerThreads = 4
    request_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Time a connection has to send its request head, and a response to be sent.",
    )
    max_connections: ServerConnections = 256


class ExporterSettings(ExporterServerSettings):
    """Where a worker serves ``/metrics`` and how many ``hub`` label values it may emit.

    ``CT_EXPORTER_HOST`` (default ``127.0.0.1``), ``CT_EXPORTER_PORT`` (default 9464, 0 = pick a free
    port), ``CT_EXPORTER_MAX_HUBS`` (default 500: further hubs fold into ``hub="_other"``),
    ``CT_EXPORTER_MAX_LABEL_LENGTH`` (default 128: longer hub ids are truncated with a hash suffix),
    ``CT_EXPORTER_MAX_FOLDED_HUBS`` (default 100,000: folded hub ids remembered, to count each once),
    ``CT_EXPORTER_ENABLED`` (default true: the worker starts the exporter).
    """

    model_config = SettingsConfigDict(env_prefix="CT_EXPORTER_", extra="ignore", allow_inf_nan=False)

    enabled: bool = Field(default=True, description="Serve /metrics from the worker.")
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
    max_folded_hubs: int = Field(
        default=DEFAULT_MAX_FOLDED,
        ge=1,
        description="Hub ids folded into _other remembered (to count each once); beyond it the least "
        "recently folded is forgotten (contest_exporter_folded_ids_forgotten_total).",
    )
