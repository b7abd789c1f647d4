"""Settings of the stream processor (env prefix ``CT_WORKER_``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contest_telemetry.schema.contract import ARMING_BUDGET_MS, RESOLUTION_BUDGET_MS
from contest_telemetry.schema.events import MAX_MILLIS

__all__ = ["WorkerSettings"]


class WorkerSettings(BaseSettings):
    """The stream worker: windows, state and faust (env prefix ``CT_WORKER_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_WORKER_", extra="ignore", allow_inf_nan=False)

    app_id: str = Field(
        default="contest-telemetry-worker",
        description="Faust app id: the consumer group and the prefix of the changelog topic.",
    )
    data_dir: Path = Field(
        default_factory=lambda: Path(tempfile.gettempdir()) / "contest-telemetry-worker",
        description="Faust's data directory (the memory store keeps nothing there but faust wants one).",
    )
    window_s: float = Field(
        default=60.0, gt=0, allow_inf_nan=False, description="Tumbling window size, event time."
    )
    grace_s: float = Field(
        default=30.0, ge=0, allow_inf_nan=False, description="Allowed lateness after a window's end."
    )
    rolling_windows: int = Field(default=5, ge=1, description="Closed windows merged into the rolling view.")
    retained_windows: int = Field(default=15, ge=1, description="Closed windows kept per hub in state.")
    lifecycle_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        allow_inf_nan=False,
        description="Open contests not seen for this long (event time) are expired.",
    )
    alpha: float = Field(
        default=0.01, gt=0, lt=1, allow_inf_nan=False, description="DDSketch relative accuracy."
    )
    max_open_contests: int = Field(
        default=100_000,
        ge=1,
        description="Open contests (armed or launched) kept per hub; beyond it the least recently "
        "created is expired (lifecycle 'overflow') and counted.",
    )
    max_hubs: int = Field(
        default=10_000,
        ge=1,
        description="Hubs kept in one worker's state (over the partitions it owns). The events of a new "
        "hub beyond it are dead-lettered with reason hub_limit and counted; room comes back as idle hubs "
        "are evicted (CT_WORKER_IDLE_HUB_WINDOWS). A hub holding 15 full windows takes about 110 KB.",
    )
    sketch_max_buckets: int = Field(
        default=2048,
        ge=16,
        description="Buckets per DDSketch; beyond it the lowest buckets collapse into one (see streams/sketch.py).",
    )
    max_state_value_bytes: int = Field(
        default=512 * 1024,
        ge=16 * 1024,
        le=900 * 1024,
        description="Largest state value written to the changelog (the broker's default message limit is 1 MiB).",
    )
    idle_hub_windows: int | None = Field(
        default=None,
        ge=1,
        description="A hub with no open window, no open contest and no event for this many windows is "
        "evicted from state (default: CT_WORKER_RETAINED_WINDOWS).",
    )
    state_flush_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        allow_inf_nan=False,
        description="Records change the state in memory; every this many seconds (and before every "
        "offset commit, rebalance and shutdown) each key they touched is written to the changelog "
        "once. 0 writes every record's keys at once (the reference path).",
    )
    state_flush_events: int = Field(
        default=200_000,
        ge=1,
        description="Also write the staged state once this many events were applied since the last "
        "write: bounds one write's size and what a crash makes the worker read again.",
    )
    source: str = Field(
        default="ingested",
        pattern="^(ingested|events)$",
        description="'ingested': read the ingest stage's packed records (fast); 'events': read "
        "contest.events record by record through faust (the reference path).",
    )
    ingest: str = Field(
        default="child",
        pattern="^(child|none)$",
        description="'child': the worker command starts an ingest stage as a child process "
        "(with source=ingested); 'none': ingest stages run on their own.",
    )
    arming_budget_ms: float = Field(
        default=ARMING_BUDGET_MS,
        gt=0,
        allow_inf_nan=False,
        description="Arming p95 budget (window results flag breaches).",
    )
    resolution_budget_ms: float = Field(
        default=RESOLUTION_BUDGET_MS, gt=0, allow_inf_nan=False, description="Resolution p95 budget."
    )
    web_enabled: bool = Field(
        default=False, description="Serve faust's own web UI (the exporter is separate)."
    )
    web_port: int = Field(default=6066, ge=1, le=65535, description="Port of faust's web UI when enabled.")
    producer_acks: int = Field(default=-1, description="-1 = all (Tansu takes it too, without idempotence).")
    producer_max_batch_bytes: int = Field(
        default=256 * 1024,
        ge=16 * 1024,
        le=1024 * 1024,
        description="Largest batch of records the worker's producer builds per partition (contest records, "
        "window results, dead letters, changelog). faust's default, 16 KiB, cost about 8 us of worker CPU "
        "per event in a batch's overhead (benchmarks/stream_throughput.py); at most 1 MiB, so a batch stays "
        "under the broker's default message size limit, which the changelog topic keeps.",
    )
    loglevel: str = Field(default="warn", description="faust log level: debug, info, warn, error.")
    window_send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="Wait this long for window results (and, staged, the contest records and dead letters of a flush) to be acknowledged before state marks them emitted; beyond it the worker stops (staged) or retries the record (per record).",
    )
    apply_retry_s: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="Retry applying a record (outputs, state) this long after failures, reloading state each time; then the worker stops (streams/apply.py).",
    )
    reread_timeout_s: float = Field(
        default=60.0,
        gt=0,
        allow_inf_nan=False,
        description="Give up (and stop the worker) when records the state has not applied cannot be read again for this long.",
    )
    stall_s: float = Field(
        default=30.0,
        gt=0,
        allow_inf_nan=False,
        description="An owned input partition with records waiting and nothing applied for this long is put back into fetching (see docs/known-issues.md).",
    )
    exit_grace_s: float = Field(
        default=10.0,
        gt=0,
        allow_inf_nan=False,
        description="Once stopped, the worker process exits within this many seconds even if a thread faust left running (seen after a fatal stop) would hold the interpreter at exit; the threads still alive are logged.",
    )
    health_stall_s: float = Field(
        default=120.0,
        gt=0,
        allow_inf_nan=False,
        description="/healthz fails when an owned partition has had records waiting and none applied for this long, or the worker's loop reported nothing for this long (keep it above CT_WORKER_STALL_S, which tries to unstick the partition first).",
    )
    crash_loop_restarts: int = Field(
        default=3,
        ge=1,
        le=1000,
        description="/healthz fails once the agent crashed (and faust restarted it) this many times within CT_WORKER_CRASH_LOOP_WINDOW_S.",
    )
    crash_loop_window_s: float = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Crashes further apart than this are no loop; /healthz is ok again once the agent went this long without one.",
    )
    fault_agent_crashes: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Test only (never in production): the agent raises on each of the first N records it receives, so faust restarts it; the records are applied afterwards by the re-read (tests of /healthz).",
    )
    bench_expect_events: int | None = Field(
        default=None,
        ge=1,
        description='Timing hook for outside scripts (benchmarks/stream_throughput.py): write {"events", "seconds"} to CT_WORKER_BENCH_REPORT once this many events were applied (streams/timing.py).',
    )
    bench_report: Path | None = Field(
        default=None, description="Where the timing report of CT_WORKER_BENCH_EXPECT_EVENTS goes."
    )

    @field_validator("window_s", "lifecycle_ttl_s")
    @classmethod
    def _whole_ms(cls, value: float) -> float:
        # Used in whole ms (window_ms, ttl_ms): 0 ms would divide by zero, beyond year 9999 in ms
        # (the largest time an event may carry) nothing could ever fall in or out.
        if not 1 <= round(value * 1000) <= MAX_MILLIS:
            raise ValueError(f"must be at least 0.001 s (1 ms) and at most {MAX_MILLIS // 1000} s")
        return value

    @field_validator("grace_s")
    @classmethod
    def _grace_ms(cls, value: float) -> float:
        if round(value * 1000) > MAX_MILLIS:
            raise ValueError(f"must be at most {MAX_MILLIS // 1000} s")
        return value

    @field_validator("alpha")
    @classmethod
    def _sketch_alpha(cls, value: float) -> float:
        # DDSketch's gamma = (1 + alpha) / (1 - alpha) must stay above 1 in floating point.
        if value < 1e-6:
            raise ValueError("must be at least 1e-06 (and below 1)")
        return value

    @field_validator("producer_acks")
    @classmethod
    def _acks(cls, value: int) -> int:
        if value not in (-1, 0, 1):
            raise ValueError("must be -1 (all), 0 or 1")
        return value

    @field_validator("loglevel")
    @classmethod
    def _loglevel(cls, value: str) -> str:
        if value.lower() not in ("debug", "info", "warn", "warning", "error", "critical"):
            raise ValueError("must be debug, info, warn, error or critical")
        return value

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


class EventTimeSettings(BaseSettings):
    """How far an event's time may be from its Kafka record's timestamp (env prefix
    ``CT_EVENT_TIME_``); checked where events are validated (the ingest stage, or the worker
    reading contest.events itself). Beyond it the event is dead-lettered with reason
    ``event_time``: a hub clock far ahead would otherwise move the watermark and make every other
    hub's events late. The producer sets the record's timestamp, so the future bound counts from
    the earlier of it and now, and a timestamp of 0 (or none) counts as now; the past bound counts
    from the record's timestamp (see :func:`streams.fastdecode.screen_event_times`). Events
    without a ``timestamp`` take the record's and always pass."""

    model_config = SettingsConfigDict(env_prefix="CT_EVENT_TIME_", extra="ignore", allow_inf_nan=False)

    max_future_s: float | None = Field(
        default=300.0,
        gt=0,
        allow_inf_nan=False,
        description="Most seconds an event may be ahead of its record's timestamp or now, whichever is "
        "earlier (a record timestamp of 0 counts as now; unset: no limit).",
    )
    max_past_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Most seconds an event may be behind its record's timestamp, or now when the record "
        "has none (unset: no limit; late events are counted by the worker, and backfills are old by design).",
    )

    def window_ms(self) -> tuple[float | None, float | None]:
        """(most ms ahead, most ms behind), None for no limit."""
        return (
            None if self.max_future_s is None else self.max_future_s * 1000.0,
            None if self.max_past_s is None else self.max_past_s * 1000.0,
        )


class IngestSettings(BaseSettings):
    """The ingest stage (``contest-telemetry ingest``): contest.events -> the ingested topic
    (env prefix ``CT_INGEST_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_INGEST_", extra="ignore", allow_inf_nan=False)

    group_id: str = Field(
        default="contest-telemetry-ingest", min_length=1, description="Consumer group on contest.events."
    )
    max_poll_records: int = Field(default=5000, ge=1, description="Most records one poll (getmany) returns.")
    max_batch_events: int = Field(
        default=2000,
        ge=1,
        description="Most events in one ingested record; a source record's events are never split "
        "(an envelope larger than this stays whole).",
    )
    max_batch_bytes: int = Field(
        default=1_000_000,
        ge=16_384,
        description="Target largest ingested record in bytes, at most half of "
        "CT_TOPIC_INGESTED_MAX_MESSAGE_BYTES (4 MiB by default); a single source record larger than this "
        "is still sent whole.",
    )
    verbatim: bool = Field(
        default=True,
        description="Put a source record whose events are all valid and exact into its ingested batch "
        "as it came (version 3 records; the worker fills in the defaults) instead of encoding each "
        "event again; false: normalised events only (version 2, the reference). Workers read both.",
    )
    poll_timeout_ms: int = Field(default=100, ge=0, description="How long one poll waits for records.")
    poll_linger_ms: int = Field(
        default=25,
        ge=0,
        le=10_000,
        description="Once a poll has records, keep gathering what arrives for this long (up to "
        "max_poll_records) before packing: fewer, fuller records and commits at live rates.",
    )
    fetch_max_wait_ms: int = Field(
        default=50, ge=0, description="How long the broker may hold a fetch to fill it."
    )
    transactions: str = Field(
        default="off",
        pattern="^(auto|on|off)$",
        description="'off': at-least-once (every send acknowledged, then the offsets committed; the "
        "worker deduplicates by source offset, so its results are exactly once); 'on': a "
        "transactional producer commits each poll's output and its input offsets atomically "
        "(exactly once for other read_committed readers of the ingested topic; each commit leaves a "
        "marker the worker must read past, see docs/known-issues.md); 'auto': 'on' where the broker "
        "grants producer ids.",
    )
    transactional_id: str = Field(
        default="contest-telemetry-ingest",
        min_length=1,
        description="Prefix of the transactional id; the id is '<prefix>-<instance_id>'.",
    )
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        description="Stable name of this replica (e.g. the pod name), appended to the transactional id: "
        "a restarted replica then aborts its predecessor's open transaction at once instead of after "
        "transaction_timeout_s. Default: random per process. Two live replicas must never share one.",
    )
    transaction_timeout_s: float = Field(
        default=60.0,
        ge=1,
        le=900,
        description="The broker aborts a transaction open this long (a crashed stage's output stays "
        "invisible to read_committed readers at most this long when instance_id is not stable).",
    )
    linger_ms: int = Field(default=5, ge=0, description="Producer linger before sending a batch.")
    compression: str = Field(
        default="none",
        pattern="^(none|gzip)$",
        description="Compression of the ingested and dead-letter records.",
    )
    send_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="A poll's sends and commit must succeed within this; otherwise the stage stops with "
        "an error (exit 1) and commits nothing past what is durable.",
    )
    log_interval_s: float = Field(default=10.0, gt=0, description="Progress is logged at INFO this often.")
