"""``contest-telemetry worker`` (also ``python -m streams worker``): run the stream processor.

Settings come from the environment (``KAFKA_*``, ``CT_TOPIC_*``, ``CT_WORKER_*``); the flags
override the most used ones.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from contest_telemetry.settings import KafkaSettings, TopicSettings, settings_error_line
from contest_telemetry.topics import ensure_topics, pipeline_topics
from sinks.prometheus.counters import CounterSink
from streams.exceptions import StreamsConfigError

__all__ = ["add_parser", "main", "run", "run_worker"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "worker", help="run the stream processor (faust) over contest.events"
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--app-id", help="consumer group / app id (CT_WORKER_APP_ID)")
    p.add_argument("--data-dir", help="faust data directory (CT_WORKER_DATA_DIR)")
    p.add_argument("--partitions", type=int, help="partitions of contest.events (CT_TOPIC_PARTITIONS)")
    p.add_argument("--window-s", type=float, help="window size in seconds (CT_WORKER_WINDOW_S)")
    p.add_argument("--grace-s", type=float, help="allowed lateness in seconds (CT_WORKER_GRACE_S)")
    p.add_argument("-l", "--loglevel", help="faust log level: debug, info, warn, error")
    p.set_defaults(func=run)
    return p


def _settings(args: argparse.Namespace) -> tuple[Any, KafkaSettings, TopicSettings]:
    from streams.settings import WorkerSettings

    overrides = {
        k: v
        for k, v in {
            "app_id": args.app_id,
            "data_dir": args.data_dir,
            "window_s": args.window_s,
            "grace_s": args.grace_s,
            "loglevel": args.loglevel,
        }.items()
        if v is not None
    }
    try:
        worker = WorkerSettings(**overrides)
        kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        topics = TopicSettings(**({"partitions": args.partitions} if args.partitions else {}))
    except ValidationError as exc:
        # settings_error_line: one line, and never the input of a cross-field check (secrets)
        raise StreamsConfigError(settings_error_line(exc)) from None
    return worker, kafka, topics


def run_worker(
    settings: Any,
    kafka: KafkaSettings,
    topics: TopicSettings,
    counters: CounterSink | None = None,
    on_app: Callable[[Any], None] | None = None,
) -> int:
    """Create the topics, build the app and run a faust worker until it is stopped (SIGTERM/INT).

    ``on_app(app)`` is called before the worker starts; ``app.source`` is the
    :class:`~sinks.prometheus.source.SnapshotSource` for an exporter.
    """
    import faust

    from streams.app import create_app

    asyncio.run(ensure_topics(kafka, pipeline_topics(topics)))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings, kafka, topics, counters)
    if on_app is not None:
        on_app(app)
    worker = faust.Worker(app, loglevel=settings.loglevel, quiet=True)
    # faust's terminal spinner sets the root logger to DEBUG (faust/worker.py
    # ``_setup_spinner_handler``), so every ``log.debug`` in aiokafka (one per message sent)
    # built a LogRecord: ~20% of the worker's time. Without it the root level is ``loglevel``.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run a worker that serves its Prometheus exporter (``CT_EXPORTER_*``) while it runs."""
    from prometheus_client import CollectorRegistry

    from sinks.prometheus import ExporterSettings, PipelineCollector, PipelineCounters, start_exporter

    try:
        settings, kafka, topics = _settings(args)
        exporter = ExporterSettings()
    except (StreamsConfigError, ValidationError) as exc:
        print(f"worker: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    counters = PipelineCounters(max_hubs=exporter.max_hubs, max_label_length=exporter.max_label_length)
    registry = CollectorRegistry()
    servers: list[Any] = []

    def on_app(app: Any) -> None:
        registry.register(PipelineCollector(counters, app.source))
        if exporter.enabled:
            server = start_exporter(registry, exporter)
            servers.append(server)
            print(f"worker: metrics at {server.url}", file=sys.stderr, flush=True)

    try:
        return run_worker(settings, kafka, topics, counters, on_app)
    finally:
        for server in servers:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    from streams import bench

    bench.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))
