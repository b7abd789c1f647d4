"""Settings of the stream processor (env prefix ``CT_WORKER_``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["WorkerSettings"]


class WorkerSettings(BaseSettings):
    """The stream worker: windows, state and faust (env prefix ``CT_WORKER_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_WORKER_", extra="ignore")

    app_id: str = Field(
        default="contest-telemetry-worker",
        description="Faust app id: the consumer group and the prefix of the changelog topic.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "contest-telemetry-worker",
        description="Faust's data directory (the memory store keeps nothing there but faust wants one).",
    )
    window_s: float = Field(default=60.0, gt=0, description="Tumbling window size, event time.")
    grace_s: float = Field(default=30.0, ge=0, description="Allowed lateness after a window's end.")
    rolling_windows: int = Field(default=5, ge=1, description="Closed windows merged into the rolling view.")
    retained_windows: int = Field(default=15, ge=1, description="Closed windows kept per hub in state.")
    lifecycle_ttl_s: float = Field(
        default=3600.0, gt=0, description="Open contests not seen for this long (event time) are expired."
    )
    alpha: float = Field(default=0.01, gt=0, lt=1, description="DDSketch relative accuracy.")
    arming_budget_ms: float = Field(
        default=8000.0, gt=0, description="Arming p95 budget (window results flag breaches)."
    )
    resolution_budget_ms: float = Field(default=800.0, gt=0, description="Resolution p95 budget.")
    web_enabled: bool = Field(
        default=False, description="Serve faust's own web UI (the exporter is separate)."
    )
    web_port: int = Field(default=6066, description="Port of faust's web UI when enabled.")
    producer_acks: int = Field(default=-1, description="-1 = all (Tansu takes it too, without idempotence).")
    loglevel: str = Field(default="warn", description="faust log level: debug, info, warn, error.")
    window_send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Wait this long for window results to be acknowledged before state marks them emitted.",
    )
    reread_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Give up (and stop the worker) when records the state has not applied cannot be read again for this long.",
    )
    stall_s: float = Field(
        default=30.0,
        gt=0,
        description="An owned input partition with records waiting and nothing applied for this long is put back into fetching (see docs/known-issues.md).",
    )
    bench_expect_events: int | None = Field(
        default=None, description="Benchmark only: write a timing report once this many events were applied."
    )
    bench_report: Path | None = Field(
        default=None, description="Benchmark only: where that timing report goes."
    )

    @model_validator(mode="after")
    def _check(self) -> WorkerSettings:
        if self.rolling_windows > self.retained_windows:
            raise ValueError("rolling_windows must not exceed retained_windows")
        return self

    @property
    def window_ms(self) -> int:
        return round(self.window_s * 1000)

    @property
    def grace_ms(self) -> int:
        return round(self.grace_s * 1000)

    @property
    def ttl_ms(self) -> int:
        return round(self.lifecycle_ttl_s * 1000)
