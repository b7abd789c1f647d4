"""``contest-telemetry ingest`` (also ``python -m streams ingest``): run the ingest stage.

Settings come from the environment (``KAFKA_*``, ``CT_TOPIC_*``, ``CT_INGEST_*``); the flags
override the most used ones. SIGTERM / SIGINT finish the poll in hand, commit it and exit 0; a send
or commit that fails exits 1 with one ``ingest: <message>`` line (the dispatcher's error path,
:func:`contest_telemetry.cli.errors.run_reported`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from contest_telemetry.logs import configure_logging
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics

__all__ = ["add_parser", "run", "run_stage"]


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

    settings = IngestSettings(**({"group_id": args.group_id} if args.group_id else {}))
    kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    topics = TopicSettings(**({"partitions": args.partitions} if args.partitions else {}))
    if not logging.getLogger().handlers:  # python -m streams ingest: progress at INFO
        configure_logging(logging.INFO)
    asyncio.run(run_stage(kafka, topics, settings))
    return 0
