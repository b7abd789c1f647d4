"""``contest-telemetry loadgen``: play N hubs publishing contest events at a target rate."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from contest_telemetry.cli.parser import positive_float, positive_int, share
from contest_telemetry.settings import KafkaSettings, TopicSettings
from contest_telemetry.topics import ensure_topics, pipeline_topics
from producers.loadgen import LoadGenerator, LoadProfile
from producers.publisher import ContestPublisher
from producers.settings import PublisherSettings

__all__ = ["add_parser", "run", "run_load"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("loadgen", help="publish synthetic contest events from many hubs")
    p.add_argument("--hubs", type=positive_int, default=20, help="hubs to play (default 20)")
    p.add_argument("--rate", type=positive_float, default=1000.0, help="events per second (default 1000)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--duration", type=positive_float, default=None, help="seconds of load (default 30)")
    group.add_argument("--events", type=positive_int, default=None, help="stop after this many events")
    p.add_argument("--breach-share", type=share, default=0.0, help="share of hubs that blow the budgets")
    p.add_argument("--multi-share", type=share, default=0.1, help="share of contests with > 2 participants")
    p.add_argument("--failure-share", type=share, default=0.02, help="share of workflows that fail")
    p.add_argument(
        "--expire-share", type=share, default=0.03, help="share of contests that expire unlaunched"
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--no-pace", action="store_true", help="publish as fast as possible (event times still follow --rate)"
    )
    p.add_argument(
        "--batching", choices=("envelope", "single"), default=None, help="record layout (default envelope)"
    )
    p.add_argument(
        "--bootstrap", default=None, help="Kafka bootstrap servers (default KAFKA_BOOTSTRAP_SERVERS)"
    )
    p.add_argument("--topic", default=None, help="topic (default CT_TOPIC_EVENTS or contest.events)")
    p.add_argument("--json", action="store_true", help="print the final stats as JSON on stdout")


async def run_load(
    kafka: KafkaSettings,
    topics: TopicSettings,
    profile: LoadProfile,
    publisher_settings: PublisherSettings,
    *,
    duration_s: float | None,
    events: int | None,
    pace: bool,
    progress: bool = True,
) -> dict[str, Any]:
    await ensure_topics(kafka, pipeline_topics(topics))
    generator = LoadGenerator(profile)
    began = time.monotonic()
    console = Console(stderr=True)
    total = events if events is not None else int((duration_s or 0) * profile.rate) or None
    with Progress(
        TextColumn("[bold]loadgen[/]"),
        BarColumn(),
        TextColumn("{task.completed:,} events"),
        TextColumn("{task.fields[rate]:,.0f}/s"),
        TimeElapsedColumn(),
        console=console,
        disable=not progress,
        transient=False,
    ) as bar:
        task = bar.add_task("publish", total=total, rate=0.0)

        def on_progress(published: int) -> None:
            elapsed = max(time.monotonic() - began, 1e-9)
            bar.update(task, completed=published, rate=published / elapsed)

        async with ContestPublisher(kafka, publisher_settings, topic=topics.events) as publisher:
            published = await generator.run(
                publisher, duration_s=duration_s, events=events, pace=pace, on_progress=on_progress
            )
        on_progress(published)
    elapsed = time.monotonic() - began
    return {
        "published": published,
        "seconds": round(elapsed, 3),
        "events_per_s": round(published / elapsed, 1) if elapsed else None,
        "hubs": profile.hubs,
        "breaching_hubs": sorted(generator.breaching),
        "publisher": publisher.stats(),
        "topic": topics.events,
    }


def run(args: argparse.Namespace) -> int:
    kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
    topics = TopicSettings(**({"events": args.topic} if args.topic else {}))
    publisher_settings = PublisherSettings(**({"batching": args.batching} if args.batching else {}))
    profile = LoadProfile(
        hubs=args.hubs,
        rate=args.rate,
        breach_share=args.breach_share,
        multi_share=args.multi_share,
        failure_share=args.failure_share,
        expire_share=args.expire_share,
        seed=args.seed,
    )
    duration = args.duration if args.duration is not None or args.events is not None else 30.0
    stats = asyncio.run(
        run_load(
            kafka,
            topics,
            profile,
            publisher_settings,
            duration_s=duration,
            events=args.events,
            pace=not args.no_pace,
            progress=sys.stderr.isatty(),
        )
    )
    if args.json:
        print(json.dumps(stats, sort_keys=True))
    else:
        Console(stderr=True).print(
            f"published {stats['published']:,} events in {stats['seconds']:.1f}s "
            f"({stats['events_per_s']:,.0f}/s) to {stats['topic']}; "
            f"dropped {stats['publisher']['dropped']}, failed {stats['publisher']['failed']}"
        )
    return 0 if stats["publisher"]["failed"] == 0 else 1
