"""``contest-telemetry dlq inspect|redrive``: what is in the dead-letter topic, and send it back.

``dlq inspect`` counts the selected dead letters by reason, field and hub and shows a few samples
per reason (a table, or ``--json`` with stable keys). ``dlq redrive`` re-publishes the selected
dead letters that now pass validation to CT_TOPIC_EVENTS (``--to``), each with a ``ct-redrive``
header naming the dead letter (``<dlq topic>/<partition>/<offset>``); it skips, and counts, those
that still fail and those whose payload was cut. ``--dry-run`` only counts.

Selection (every condition given must hold): ``--reason`` and ``--hub`` (repeatable), ``--since``
/ ``--until`` (ISO-8601, when the dead letter was written), ``--partition`` (repeatable),
``--from-offset`` / ``--to-offset`` (inclusive). A read stops at each partition's end as it was
when it started, and after ``--max`` dead letters (CT_DLQ_MAX_RECORDS); ``nextOffsets`` says where
to go on. Exit codes (README.md, "Exit codes"): 0 done; 1 a bad flag or setting, or a Kafka
error (one ``dlq: <message>`` line).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import IO, Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from contest_telemetry.cli.parser import Parser, command_parser, iso_time_ms, positive_int
from contest_telemetry.exceptions import ConfigError
from contest_telemetry.settings import KafkaSettings, TopicSettings
from sinks.dlq.settings import DlqToolSettings

__all__ = ["add_parser", "run"]

PROG = "dlq"


def _non_negative(raw: str) -> int:
    """An offset, a partition or a count: a whole number >= 0."""
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {raw!r}")
    return value


def _selection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", metavar="TOPIC", help="dead-letter topic (CT_TOPIC_DLQ)")
    p.add_argument("--reason", metavar="REASON", action="append", help="only this reason (repeatable)")
    p.add_argument("--hub", metavar="HUB", action="append", help="only this hubId (repeatable)")
    p.add_argument("--since", metavar="TIME", help="only dead letters written at or after this ISO-8601 time")
    p.add_argument("--until", metavar="TIME", help="only dead letters written before this ISO-8601 time")
    p.add_argument(
        "--partition", metavar="N", type=_non_negative, action="append", help="only this partition"
    )
    p.add_argument(
        "--from-offset", metavar="N", type=_non_negative, help="first offset to read (each partition)"
    )
    p.add_argument("--to-offset", metavar="N", type=_non_negative, help="last offset to read, inclusive")
    p.add_argument(
        "--max", metavar="N", type=positive_int, help="most dead letters to read (CT_DLQ_MAX_RECORDS)"
    )
    p.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = command_parser(
        subparsers, PROG, "inspect the dead-letter topic and redrive dead letters", __doc__
    )
    commands = parser.add_subparsers(dest="dlq_command", metavar="{inspect,redrive}", parser_class=Parser)
    inspect_p = commands.add_parser(
        "inspect", help="count dead letters by reason, field and hub", allow_abbrev=False
    )
    _selection_arguments(inspect_p)
    inspect_p.add_argument(
        "--samples", metavar="N", type=_non_negative, help="samples per reason (CT_DLQ_SAMPLES)"
    )
    redrive_p = commands.add_parser(
        "redrive", help="re-publish dead letters that now pass validation", allow_abbrev=False
    )
    _selection_arguments(redrive_p)
    redrive_p.add_argument("--to", metavar="TOPIC", help="where to send them (CT_TOPIC_EVENTS)")
    redrive_p.add_argument(
        "--dry-run", action="store_true", help="count what would be redriven, send nothing"
    )
    parser.set_defaults(func=run)
    return parser


def _selection(args: argparse.Namespace, settings: DlqToolSettings) -> Any:
    from sinks.dlq.tools import Selection

    since = iso_time_ms("--since", args.since)
    until = iso_time_ms("--until", args.until)
    if since is not None and until is not None and until <= since:
        raise ConfigError(f"--until ({args.until}) must be after --since ({args.since})")
    if args.from_offset is not None and args.to_offset is not None and args.to_offset < args.from_offset:
        raise ConfigError(f"--to-offset {args.to_offset} is before --from-offset {args.from_offset}")
    return Selection(
        reasons=frozenset(args.reason or ()),
        hubs=frozenset(args.hub or ()),
        since_ms=since,
        until_ms=until,
        partitions=frozenset(args.partition or ()),
        from_offset=args.from_offset,
        to_offset=args.to_offset,
        max_records=settings.max_records,
    )


def _topic_name(flag: str, name: str) -> str:
    try:
        TopicSettings(dlq=name)
    except ValidationError:
        raise ConfigError(f"{flag}: not a Kafka topic name: {name!r}") from None
    return name


def _console(out: IO[str]) -> Console:
    return Console(
        file=out, width=None if out.isatty() else 140, highlight=False, markup=False
    )  # hub ids, reasons, errors come from dead letters: never markup


def _counts_table(
    title: str, counts: dict[str, int], other: int = 0, bound: str = "CT_DLQ_MAX_KEYS"
) -> Table:
    table = Table(title=title)
    table.add_column("key", overflow="fold")
    table.add_column("dead letters", justify="right")
    for key, count in counts.items():
        table.add_row(key, str(count))
    if other:
        table.add_row(f"(other, over {bound})", str(other))
    return table


def _render_inspect(data: dict[str, Any], out: IO[str]) -> None:
    console = _console(out)
    more = " (stopped at --max; nextOffsets says where to go on)" if data["truncated"] else ""
    console.print(f"{data['topic']}: {data['read']} read, {data['matched']} selected{more}", markup=False)
    console.print(_counts_table("by reason", data["byReason"], data["otherReasons"], "CT_DLQ_MAX_REASONS"))
    console.print(_counts_table("by field", data["byField"], data["otherFields"]))
    console.print(_counts_table("by hub", data["byHub"], data["otherHubs"]))
    samples = Table(title="samples")
    for column in ("reason", "partition/offset", "hub", "fields", "error"):
        samples.add_column(column, overflow="fold")
    kept = [(row["reason"], row) for rows in data["samples"].values() for row in rows]
    folded = [
        (f"{row['reason']} (other, over CT_DLQ_MAX_REASONS)", row) for row in data["otherReasonSamples"]
    ]
    for reason, row in kept + folded:
        samples.add_row(
            reason,
            f"{row['partition']}/{row['offset']}",
            str(row["hub"]),
            ", ".join(row["fields"]),
            row["error"],
        )
    console.print(samples)
    console.print(
        "next offsets: " + ", ".join(f"p{p}={o}" for p, o in data["nextOffsets"].items()), markup=False
    )


def _render_redrive(data: dict[str, Any], out: IO[str]) -> None:
    table = Table(
        title=f"dlq redrive{' (dry run)' if data['dryRun'] else ''}: {data['topic']} -> {data['target']}"
    )
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in ("read", "matched", "redriven", "stillFailing", "unrecoverable"):
        table.add_row(key, str(data[key]))
    for reason, count in data["stillFailingByReason"].items():
        table.add_row(f"still failing: {reason}", str(count))
    console = _console(out)
    console.print(table)
    if data["truncated"]:
        console.print("stopped at --max; nextOffsets says where to go on", markup=False)
    console.print(
        "next offsets: " + ", ".join(f"p{p}={o}" for p, o in data["nextOffsets"].items()), markup=False
    )


async def _run(
    args: argparse.Namespace, kafka: KafkaSettings, topics: TopicSettings, settings: DlqToolSettings
) -> dict[str, Any]:
    from contest_telemetry.topics import wait_for_brokers
    from sinks.dlq.tools import inspect, redrive

    selection = _selection(args, settings)
    topic = _topic_name("--topic", args.topic) if args.topic else topics.dlq
    if args.dlq_command == "inspect":
        await wait_for_brokers(kafka)
        return (await inspect(kafka, topic, selection, settings)).as_dict()
    target = _topic_name("--to", args.to) if args.to else topics.events
    await wait_for_brokers(kafka)
    report = await redrive(kafka, topic, target, selection, settings, dry_run=bool(args.dry_run))
    return report.as_dict()


def run(args: argparse.Namespace, *, stdout: IO[str] | None = None) -> int:
    out = stdout if stdout is not None else sys.stdout
    if getattr(args, "dlq_command", None) not in ("inspect", "redrive"):
        raise ConfigError("choose a dlq command: inspect or redrive")
    # A ValidationError or a Kafka error is one line through the dispatcher's error path.
    kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap is not None else {}))
    topics = TopicSettings()
    # The flags go through the settings' own bounds (CT_DLQ_MAX_RECORDS, CT_DLQ_SAMPLES).
    flags = {"max_records": args.max, "samples": getattr(args, "samples", None)}
    settings = DlqToolSettings(**{k: v for k, v in flags.items() if v is not None})
    data = asyncio.run(_run(args, kafka, topics, settings))
    if args.json:
        out.write(orjson.dumps(data).decode() + "\n")
        out.flush()
    elif args.dlq_command == "inspect":
        _render_inspect(data, out)
    else:
        _render_redrive(data, out)
    return 0
