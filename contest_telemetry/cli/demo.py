"""``contest-telemetry demo``: the whole pipeline on one machine, with a live view and a summary.

With nothing configured it starts the embedded broker (Tansu); with ``KAFKA_BOOTSTRAP_SERVERS`` it
uses that cluster (with run-scoped topic names, so nothing of yours is touched). It runs a worker
(which serves the exporter), the archiver and the load generator, shows progress live, then
prints the monitor's summary over the archive, the ``archive verify`` result and where
everything is. Ctrl-C stops the load early and still prints the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from contest_telemetry.broker import BrokerProcess, free_port, make_broker
from contest_telemetry.broker.process import stop_process_group
from contest_telemetry.cli.metrics_probe import PipelineReading, read_metrics
from contest_telemetry.cli.parser import positive_float, positive_int, share
from contest_telemetry.schema.contract import ARMING_BUDGET_MS, RESOLUTION_BUDGET_MS
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics
from producers.loadgen import LoadGenerator, LoadProfile
from producers.publisher import ContestPublisher
from producers.settings import PublisherSettings

__all__ = ["add_parser", "run"]

ARMING_BUDGET_S, RESOLUTION_BUDGET_S = ARMING_BUDGET_MS / 1000, RESOLUTION_BUDGET_MS / 1000


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="run the whole pipeline locally with a live view and a summary")
    p.add_argument("--hubs", type=positive_int, default=20, help="hubs the load generator plays (default 20)")
    p.add_argument("--rate", type=positive_float, default=400.0, help="events per second (default 400)")
    p.add_argument("--duration", type=positive_float, default=40.0, help="seconds of load (default 40)")
    p.add_argument("--breach", action="store_true", help="make 30%% of hubs blow the latency budgets")
    p.add_argument(
        "--breach-share", type=share, default=None, help="share of breaching hubs (implies --breach)"
    )
    p.add_argument(
        "--archive-dir",
        default="contest-archive",
        help="where the archive goes: a directory or s3://bucket/prefix (credentials and endpoint "
        "from AWS_* / CT_ARCHIVE_S3_*; default ./contest-archive; one sub-dir or sub-prefix per run)",
    )
    p.add_argument(
        "--engine",
        choices=("embedded", "kafka"),
        default="embedded",
        help="local broker to start when KAFKA_BOOTSTRAP_SERVERS is unset (default embedded)",
    )
    p.add_argument(
        "--window-s", type=positive_float, default=10.0, help="window size for the demo (default 10)"
    )
    p.add_argument(
        "--grace-s", type=positive_float, default=5.0, help="allowed lateness for the demo (default 5)"
    )
    p.add_argument("--json", action="store_true", help="also print the final summary as JSON on stdout")


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: IO[bytes]

    def stop(self, timeout: float = 30.0) -> int | None:
        code = stop_process_group(self.proc, timeout)
        self.log.close()
        return code


@dataclass
class _Run:
    console: Console
    kafka: KafkaSettings
    topics: TopicSettings
    env: dict[str, str]
    archive_dir: Path | str  # a directory, or an s3:// URL
    logs_dir: Path
    metrics_url: str
    children: list[_Child] = field(default_factory=list)

    def spawn(self, name: str, *args: str) -> _Child:
        log = open(self.logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed by _Child.stop
        # Own session: Ctrl-C reaches only the demo, which then stops its children in order.
        proc = subprocess.Popen(
            [sys.executable, "-m", "contest_telemetry", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        child = _Child(name, proc, log)
        self.children.append(child)
        return child


def _view(published: int, rate: float, reading: PipelineReading, elapsed: float, duration: float) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()

    def budget(value: float | None, limit: float) -> tuple[str, str]:
        if value is None:
            return "-", "[dim]no closed window yet[/]"
        return (
            f"{value * 1000:,.0f} ms",
            "[red]over budget[/]" if value > limit else "[green]within budget[/]",
        )

    arming, arming_state = budget(reading.arming_p95_s, ARMING_BUDGET_S)
    resolution, resolution_state = budget(reading.resolution_p95_s, RESOLUTION_BUDGET_S)
    table.add_row("elapsed", f"{elapsed:,.0f} s", f"of {duration:,.0f} s of load")
    table.add_row("published", f"{published:,}", f"{rate:,.0f} events/s")
    table.add_row(
        "processed", f"{reading.processed:,.0f}", "worker up" if reading.up else "[yellow]worker starting[/]"
    )
    table.add_row("consumer lag", f"{reading.lag:,.0f}", "records")
    table.add_row("dead letters", f"{reading.invalid:,.0f}", f"late events {reading.late:,.0f}")
    table.add_row(
        "arming p95", arming, f"{arming_state} (budget {ARMING_BUDGET_MS:,.0f} ms, rolling view, all hubs)"
    )
    table.add_row("resolution p95", resolution, f"{resolution_state} (budget {RESOLUTION_BUDGET_MS:,.0f} ms)")
    table.add_row(
        "hubs over budget",
        f"{reading.arming_breached_hubs} / {reading.resolution_breached_hubs}",
        "arming / resolution",
    )
    return Panel(table, title="contest-telemetry demo", border_style="cyan")


async def _load(run: _Run, profile: LoadProfile, duration: float, stop: asyncio.Event) -> dict[str, Any]:
    generator = LoadGenerator(profile)
    began = time.monotonic()
    state = {"published": 0}
    reading = PipelineReading()

    def on_progress(published: int) -> None:
        state["published"] = published
        if stop.is_set():
            raise asyncio.CancelledError

    async def refresh(live: Live) -> None:
        nonlocal reading
        while True:
            reading = await asyncio.to_thread(read_metrics, run.metrics_url)
            elapsed = time.monotonic() - began
            live.update(
                _view(state["published"], state["published"] / max(elapsed, 1e-9), reading, elapsed, duration)
            )
            await asyncio.sleep(0.5)

    async with ContestPublisher(run.kafka, PublisherSettings(), topic=run.topics.events) as publisher:
        with Live(_view(0, 0, reading, 0, duration), console=run.console, refresh_per_second=4) as live:
            refresher = asyncio.create_task(refresh(live))
            try:
                state["published"] = await generator.run(
                    publisher, duration_s=duration, pace=True, on_progress=on_progress
                )
            except asyncio.CancelledError:
                run.console.print("[yellow]stopping the load early[/]")
            finally:
                await publisher.flush()
                # Wait for the worker to catch up (bounded): the summary should cover every event.
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    reading = await asyncio.to_thread(read_metrics, run.metrics_url)
                    if reading.up and reading.lag == 0 and reading.processed >= state["published"]:
                        break
                    await asyncio.sleep(0.5)
                refresher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await refresher
                elapsed = time.monotonic() - began
                live.update(
                    _view(
                        state["published"],
                        state["published"] / max(elapsed, 1e-9),
                        reading,
                        elapsed,
                        duration,
                    )
                )
    return {
        "published": state["published"],
        "publisher": publisher.stats(),
        "breaching_hubs": sorted(generator.breaching),
        "processed": reading.processed,
        "dead_letters": reading.invalid,
        "late_events": reading.late,
    }


def _summary(run: _Run) -> dict[str, Any]:
    from sinks.archive.verify import verify_archive
    from sinks.monitor.cli import main as monitor_main

    console = run.console
    console.rule("monitor summary over the archived events")
    code = monitor_main(["--input", str(run.archive_dir), "--topic", run.topics.events, "--format", "table"])
    report = verify_archive(run.archive_dir)
    console.rule("archive verify")
    verdict = "[green]OK[/]" if report.ok else "[red]PROBLEMS[/]"
    console.print(f"{verdict}: {report.files} files, {report.lines:,} lines")
    for problem in report.problems[:20]:
        console.print(f"  [red]{problem.kind}[/] {problem.file or ''} {problem.detail}")
    return {
        "monitor_exit": code,
        "archive_ok": report.ok,
        "archive_files": report.files,
        "archive_lines": report.lines,
        "archive_problems": len(report.problems),
    }


def run(args: argparse.Namespace) -> int:
    console = Console()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    from sinks.archive.storage import is_url, open_storage, parse_location

    archive_dir: Path | str
    if is_url(args.archive_dir):
        location = parse_location(args.archive_dir)  # ConfigError: one line
        archive_dir = f"{location.url}/run-{stamp}"
        # Before a broker starts: a missing bucket, refused credentials or no endpoint is one line.
        open_storage(archive_dir).is_archive_root()
        logs_dir = Path("contest-archive-logs").resolve() / f"run-{stamp}-logs"
    else:
        archive_dir = (Path(args.archive_dir) / f"run-{stamp}").resolve()
        logs_dir = archive_dir.parent / f"run-{stamp}-logs"
        archive_dir.mkdir(parents=True, exist_ok=True)
    logs_dir.mkdir(parents=True, exist_ok=True)
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    broker: BrokerProcess | None = None
    suffix = f".demo-{stamp.lower()}" if external else ""
    topics = TopicSettings(
        events=f"contest.events{suffix}",
        dlq=f"contest.events.dlq{suffix}",
        records=f"contest.records{suffix}",
        windows=f"contest.windows{suffix}",
    )
    share_ = args.breach_share if args.breach_share is not None else (0.3 if args.breach else 0.0)
    profile = LoadProfile(hubs=args.hubs, rate=args.rate, breach_share=share_)
    stop = asyncio.Event()
    result: dict[str, Any] = {"archive_dir": str(archive_dir)}
    data_dir = Path(tempfile.mkdtemp(prefix="ct-demo-worker-"))
    run_: _Run | None = None
    try:
        if external:
            bootstrap = external
            console.print(f"using the Kafka cluster at [bold]{bootstrap}[/] (topics suffixed {suffix})")
        else:
            console.print(f"starting the {args.engine} broker ...")
            broker = make_broker(args.engine).start()
            bootstrap = broker.bootstrap
            console.print(
                f"{args.engine} broker ready at [bold]{bootstrap}[/] in {broker.startup_seconds:.2f}s"
            )
        kafka = KafkaSettings(bootstrap_servers=bootstrap)
        asyncio.run(ensure_topics(kafka, pipeline_topics(topics)))
        port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            **topics.as_env(),
            "CT_WORKER_WINDOW_S": str(args.window_s),
            "CT_WORKER_GRACE_S": str(args.grace_s),
            "CT_WORKER_APP_ID": f"contest-demo-{stamp.lower()}",
            "CT_WORKER_DATA_DIR": str(data_dir),
            "CT_EXPORTER_HOST": "127.0.0.1",
            "CT_EXPORTER_PORT": str(port),
            "CT_ARCHIVER_EXPORTER_PORT": "0",  # never clash with an archiver already on 9465
            "PYTHONUNBUFFERED": "1",
        }
        run_ = _Run(console, kafka, topics, env, archive_dir, logs_dir, f"http://127.0.0.1:{port}/metrics")
        worker = run_.spawn("worker", "worker")
        archiver = run_.spawn(
            "archiver",
            "archive",
            "run",
            "--dir",
            str(archive_dir),
            "--group",
            f"contest-demo-archiver-{stamp.lower()}",
        )
        console.print(
            f"worker (metrics at [bold]{run_.metrics_url}[/]) and archiver started; "
            f"{args.hubs} hubs at {args.rate:,.0f} events/s for {args.duration:,.0f}s"
            + (f", {share_:.0%} of hubs breaching" if share_ else "")
        )
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        try:
            result.update(asyncio.run(_load(run_, profile, args.duration, stop)))
        finally:
            signal.signal(signal.SIGINT, previous)
        result["worker_exit"] = worker.stop()
        archiver.stop()
        # A second pass picks up what the first had not read yet, from its manifest, and exits
        # once idle: the archive then holds every event published.
        catch_up = run_.spawn(
            "archiver-catch-up",
            "archive",
            "run",
            "--dir",
            str(archive_dir),
            "--group",
            f"contest-demo-archiver-{stamp.lower()}",
            "--stop-after-idle",
            "3",
        )
        catch_up.proc.wait(120)
        catch_up.stop()
        result.update(_summary(run_))
    finally:
        if run_ is not None:
            for child in run_.children:
                child.stop()
        if broker is not None:
            broker.stop()
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
    console.rule("where things are")
    console.print(f"archive:  {archive_dir}  (verify: contest-telemetry archive verify {archive_dir})")
    console.print(f"metrics:  {run_.metrics_url if run_ else '-'} (served while the worker ran)")
    console.print(f"logs:     {logs_dir}")
    if args.json:
        print(json.dumps(result, sort_keys=True, default=str))
    return 0 if result.get("archive_ok") else 1
