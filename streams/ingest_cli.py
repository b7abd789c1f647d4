"""``contest-telemetry ingest`` (also ``python -m streams ingest``): run the ingest stage.

Settings come from the environment (``KAFKA_*``, ``CT_TOPIC_*``, ``CT_INGEST_*``); the flags
override the most used ones. SIGTERM / SIGINT finish the poll in hand, commit it and exit 0; a send
or commit that fails exits 1 with one line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import ValidationError

from contest_telemetry.exceptions import ContestTelemetryError
from contest_telemetry.logs import configure_logging
from contest_telemetry.settings import KafkaSettings, TopicSettings, settings_error_line
from contest_telemetry.topics import ensure_topics, pipeline_topics

__all__ = ["add_parser", "run", "run_stage"]

PROG = "contest-telemetry"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "ingest", help="validate contest.events in batches and pack them per hub for the worker"
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--group-id", help="consumer group on contest.events (CT_INGEST_GROUP_ID)")
    p.add_argument("--partitions", type=int, help="partitions of contest.events (CT_TOPIC_PARTITIONS)")
    p.set_defaults(func=run)
    return p


async def run_stage(kafka: KafkaSettings, topics: TopicSettings, settings: Any) -> None:
    """Create the pipeline's topics, then run the stage until SIGTERM / SIGINT."""
    from streams.ingest import IngestStage

    await ensure_topics(kafka, pipeline_topics(topics))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stage = IngestStage(kafka, topics, settings)
    try:
        await stage.start()
        await stage.run(stop)
    finally:
        await stage.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(args: argparse.Namespace) -> int:
    from streams.settings import IngestSettings

    try:
        settings = IngestSettings(**({"group_id": args.group_id} if args.group_id else {}))
        kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        topics = TopicSettings(**({"partitions": args.partitions} if args.partitions else {}))
    except ValidationError as exc:
        print(f"{PROG}: {settings_error_line(exc)}", file=sys.stderr)
        return 1
    if not logging.getLogger().handlers:  # python -m streams ingest: progress at INFO
        try:
            configure_logging(logging.INFO)
        except ContestTelemetryError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
    try:
        asyncio.run(run_stage(kafka, topics, settings))
    except ContestTelemetryError as exc:
        print(f"{PROG}: ingest: {exc}", file=sys.stderr)
        return 1
    except KafkaError as exc:  # e.g. no broker answers at start
        print(f"{PROG}: ingest: {exc!r}", file=sys.stderr)
        return 1
    return 0
