"""``contest-telemetry archive run|verify``: archive contest events and records as gzip NDJSON.

``archive run`` consumes ``contest.events`` and ``contest.records`` into a date-partitioned tree of
gzip NDJSON chunks with a ``manifest.jsonl`` (see ``sinks/archive/store.py`` for the crash-safety
protocol). SIGTERM/SIGINT stop it gracefully: open chunks are written out first. Partitions
added to the topics while it runs are picked up (checked every CT_ARCHIVE_PARTITION_REFRESH_SECONDS).
Offsets deleted by retention before they were read are recorded in the manifest as a gap, logged
and counted (``gaps`` in the progress line and the ``--json`` stats).

``archive verify DIR`` checks every file against the manifest and the offsets' continuity; a gap
recorded by the archiver fails it unless ``--allow-gaps``.

Exit codes (the table of every command: README.md, "Exit codes"): 0 ok; 1 with one
``archive: <message>`` line on stderr for a bad flag or setting or a failed ``run`` or
``replay``, and 1 when ``verify`` found problems (listed on stdout).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import IO, Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from contest_telemetry.cli.errors import EXIT_ERROR, EXIT_OK, run_reported
from contest_telemetry.cli.parser import Parser, command_parser
from contest_telemetry.exceptions import ConfigError, ContestTelemetryError
from contest_telemetry.logs import announce, configure_logging, line_stream
from contest_telemetry.settings import KafkaSettings, TopicSettings
from sinks.archive.lines import Kind
from sinks.archive.metrics import ArchiverExporterSettings, start_archive_exporter
from sinks.archive.replay import add_replay_arguments
from sinks.archive.runner import ArchiveRun, run_archiver
from sinks.archive.settings import ArchiveS3Settings, ArchiveSettings
from sinks.archive.storage import is_url, open_storage
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import VerifyReport, verify_archive

__all__ = ["PROG", "add_parser", "main", "run"]

PROG = "archive"


def _positive_float(flag: str, raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{flag} must be a positive number of seconds (got {raw!r})")
    return value


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(
        dest="archive_command", metavar="{run,verify,replay}", parser_class=Parser
    )
    run_p = commands.add_parser("run", help="archive contest.events and contest.records", allow_abbrev=False)
    run_p.add_argument(
        "--dir",
        metavar="DIR|URL",
        help="archive root: a directory or s3://bucket/prefix (CT_ARCHIVE_DIR, default ./contest-archive)",
    )
    run_p.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers (KAFKA_BOOTSTRAP_SERVERS)"
    )
    run_p.add_argument("--events-topic", metavar="TOPIC", help="events topic ('' to skip; CT_TOPIC_EVENTS)")
    run_p.add_argument(
        "--records-topic", metavar="TOPIC", help="records topic ('' to skip; CT_TOPIC_RECORDS)"
    )
    run_p.add_argument(
        "--chunk-records", metavar="N", help="Kafka records per chunk (CT_ARCHIVE_CHUNK_RECORDS)"
    )
    run_p.add_argument(
        "--group", metavar="GROUP", help="consumer group for offset commits (CT_ARCHIVE_GROUP_ID)"
    )
    run_p.add_argument(
        "--stop-after-idle", metavar="SECONDS", help="stop (flushing) after no records this long"
    )
    run_p.add_argument(
        "--idle-flush",
        metavar="SECONDS",
        help="close a partition's chunk after no records this long (CT_ARCHIVE_IDLE_FLUSH_SECONDS, 300)",
    )
    run_p.add_argument(
        "--max-chunk-age",
        metavar="SECONDS",
        help="close a partition's chunk once open this long (CT_ARCHIVE_MAX_CHUNK_AGE_SECONDS, 3600)",
    )
    run_p.add_argument(
        "--partition-refresh",
        metavar="SECONDS",
        help="look for new partitions this often (CT_ARCHIVE_PARTITION_REFRESH_SECONDS, 30)",
    )
    run_p.add_argument("--progress-interval", metavar="SECONDS", help="progress line period on stderr (5)")
    run_p.add_argument("--json", action="store_true", help="print the final stats as one JSON line")
    verify_p = commands.add_parser("verify", help="check an archive directory", allow_abbrev=False)
    verify_p.add_argument(
        "directory", metavar="DIR|URL", help="archive root: a directory or s3://bucket/prefix"
    )
    verify_p.add_argument("--json", action="store_true", help="machine-readable report")
    verify_p.add_argument(
        "--allow-gaps",
        action="store_true",
        help="accept gaps the archiver recorded (offsets deleted by retention before it read them)",
    )
    add_replay_arguments(commands)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``archive`` (with ``run`` and ``verify``) on a subparsers action; dispatch to :func:`run`."""
    parser = command_parser(
        subparsers, PROG, "archive contest telemetry to gzip NDJSON, and verify archives", __doc__
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _settings(args: argparse.Namespace) -> tuple[ArchiveRun, bool]:
    overrides: dict[str, Any] = {}
    if args.dir is not None:
        if not args.dir.strip():
            raise ConfigError("--dir must not be empty")
        overrides["dir"] = args.dir
    if args.chunk_records is not None:
        overrides["chunk_records"] = args.chunk_records
    if args.group is not None:
        overrides["group_id"] = args.group
    if args.events_topic is not None:
        overrides["events_topic"] = args.events_topic
    if args.records_topic is not None:
        overrides["records_topic"] = args.records_topic
    # A ValidationError names the variable through the one error path (settings_error_line).
    settings = ArchiveSettings(**overrides)
    s3_settings = ArchiveS3Settings() if is_url(settings.dir) else None
    kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap is not None else {}))
    topic_names = TopicSettings()
    if not kafka.bootstrap_servers.strip():
        raise ConfigError("--bootstrap / KAFKA_BOOTSTRAP_SERVERS must not be empty")
    topics: dict[str, Kind] = {}
    events = topic_names.events if settings.events_topic is None else settings.events_topic
    records = topic_names.records if settings.records_topic is None else settings.records_topic
    if events:
        topics[events] = "events"
    if records:
        if records in topics:
            raise ConfigError(f"events and records topics must differ (both {records!r})")
        topics[records] = "records"
    if not topics:
        raise ConfigError("nothing to archive: both --events-topic and --records-topic are empty")
    stop_after_idle = _positive_float("--stop-after-idle", args.stop_after_idle)
    idle_flush = _positive_float("--idle-flush", args.idle_flush) or settings.idle_flush_seconds
    max_chunk_age = _positive_float("--max-chunk-age", args.max_chunk_age) or settings.max_chunk_age_seconds
    partition_refresh = (
        _positive_float("--partition-refresh", args.partition_refresh) or settings.partition_refresh_seconds
    )
    interval = (
        5.0
        if args.progress_interval is None
        else _positive_float("--progress-interval", args.progress_interval)
    )
    storage = open_storage(settings.dir, s3_settings)  # ConfigError for a bad URL or endpoint
    store = ArchiveStore(settings.dir, settings.chunk_records, settings.compress_level, storage=storage)
    archive_run = ArchiveRun(
        store=store,
        kafka=kafka,
        topics=topics,
        group_id=settings.group_id,
        stop_after_idle=stop_after_idle,
        idle_flush=idle_flush,
        max_chunk_age=max_chunk_age,
        partition_refresh=partition_refresh,
        progress=line_stream(__name__),  # plain on stderr, or JSON lines with CT_LOG_FORMAT=json
        progress_interval=interval or 5.0,
    )
    return archive_run, bool(args.json)


def _run_archive(args: argparse.Namespace, out: IO[str]) -> int:
    archive_run, as_json = _settings(args)
    exporter_settings = ArchiverExporterSettings()
    # Before anything connects: a port in use stops the run at once with one line.
    exporter = start_archive_exporter(archive_run, exporter_settings)
    if exporter is not None:
        announce(__name__, f"{PROG}: metrics at {exporter.url} (health: /healthz, /readyz)")
    try:
        archive_run.store.open()
        if archive_run.store.removed:
            announce(
                __name__,
                f"{PROG}: removed {len(archive_run.store.removed)} unlisted chunk file(s) left by a crash",
            )
        stats = run_archiver(archive_run)
    finally:
        if exporter is not None:
            exporter.stop()
    if as_json:
        out.write(orjson.dumps(stats.as_dict()).decode() + "\n")
        out.flush()
    return EXIT_OK


def _gaps_line(report: VerifyReport) -> str:
    missing = sum(gap.missing for gap in report.gaps)
    reasons = ", ".join(sorted({gap.reason for gap in report.gaps}))
    return f"{len(report.gaps)} gap(s) recorded: {missing} offsets lost before archiving ({reasons})"


def _render(report: VerifyReport, out: IO[str]) -> None:
    console = Console(file=out, width=None if out.isatty() else 160, highlight=False)
    if report.ok:
        allowed = f"; {_gaps_line(report)}, allowed" if report.gaps else ""
        console.print(
            f"archive OK: {report.files} files, {report.lines} lines in {report.root}{allowed}", markup=False
        )
        for gap in report.gaps:
            console.print(
                f"  gap {gap.topic}[{gap.partition}] offsets {gap.first_missing}..{gap.last_missing} "
                f"({gap.reason})",
                markup=False,
            )
        return
    table = Table(title=f"archive verify: {len(report.problems)} problem(s) in {report.root}")
    for column in ("kind", "file", "topic", "partition", "detail"):
        table.add_column(column, overflow="fold")
    for problem in report.problems:
        # Text, not str: names and details come from the archive, and rich reads "[...]" in a str
        # as markup (a name like "[/x]" raised MarkupError).
        table.add_row(
            Text(problem.kind),
            Text(problem.file or ""),
            Text(problem.topic or ""),
            Text("" if problem.partition is None else str(problem.partition)),
            Text(problem.detail),
        )
    console.print(table)
    console.print(f"{report.files} files, {report.lines} lines checked", markup=False)
    if report.gaps:
        console.print(_gaps_line(report), markup=False)


def _verify(args: argparse.Namespace, out: IO[str]) -> int:
    try:
        report = verify_archive(args.directory, allow_gaps=bool(args.allow_gaps))
    except (OSError, ContestTelemetryError) as error:
        raise ContestTelemetryError(f"cannot verify {args.directory}: {error}") from error
    if args.json:
        out.write(orjson.dumps(report.as_dict()).decode() + "\n")
        out.flush()
    else:
        _render(report, out)
    return EXIT_OK if report.ok else EXIT_ERROR


def _replay(args: argparse.Namespace, out: IO[str]) -> int:
    from sinks.archive.replay import build_job, render_stats, replay

    job = build_job(args, line_stream("sinks.archive.replay"))  # CT_LOG_FORMAT=json: JSON lines
    stats = replay(job)
    if args.json:
        out.write(orjson.dumps(stats.as_dict()).decode() + "\n")
        out.flush()
    else:
        render_stats(stats, out)
    return EXIT_OK


def run(args: argparse.Namespace, *, stdout: IO[str] | None = None) -> int:
    """Dispatch ``archive run|verify|replay`` for parsed arguments; returns the exit code, raises
    the error to report (:func:`contest_telemetry.cli.errors.run_reported`)."""
    out = stdout if stdout is not None else sys.stdout
    if not logging.getLogger().handlers:
        configure_logging(logging.WARNING, text_format=f"{PROG}: %(message)s")
        # aiokafka logs every failed connection attempt; the error that ends the run is printed once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    command = getattr(args, "archive_command", None)
    if command == "run":
        return _run_archive(args, out)
    if command == "verify":
        return _verify(args, out)
    if command == "replay":
        return _replay(args, out)
    raise ConfigError("choose a command: run, verify or replay")


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m sinks.archive run|verify ...``)."""
    parser = Parser(prog=PROG, description=__doc__, allow_abbrev=False)
    _add_arguments(parser)
    return run_reported(PROG, lambda: run(parser.parse_args(argv)))
