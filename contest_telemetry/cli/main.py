"""``contest-telemetry``: one command with a subcommand per job.

Errors the user can fix (bad flags, bad config, a broker that cannot start) print one line,
``contest-telemetry: <message>``, and exit 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from contest_telemetry.cli.parser import Parser
from contest_telemetry.exceptions import ContestTelemetryError
from contest_telemetry.logs import check_log_settings, configure_logging
from contest_telemetry.settings import settings_error_line

__all__ = ["main"]

PROG = "contest-telemetry"

# subcommand -> module with add_parser(subparsers) and run(args) -> int; imported lazily so that
# `contest-telemetry monitor` does not pay for faust's import.
_COMMANDS: dict[str, str] = {
    "broker": "contest_telemetry.cli.broker_cmd",
    "loadgen": "producers.cli",
    "demo": "contest_telemetry.cli.demo",
    "worker": "streams.cli",
    "ingest": "streams.ingest_cli",
    "archive": "sinks.archive.cli",
    "dlq": "sinks.dlq.cli",
    "bench": "contest_telemetry.cli.bench",
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(module.rsplit(".", 1)[0]) is not None and (
        importlib.util.find_spec(module) is not None
    )


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Streaming telemetry pipeline for game hub contests.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO (default WARNING)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for _name, module in _COMMANDS.items():
        if _available(module):
            importlib.import_module(module).add_parser(sub)
    sub.add_parser("monitor", help="summarise contest telemetry NDJSON against the budgets", add_help=False)
    return parser


# Settings a command reads only later (in a child process, or once connected): read here first, so
# that a bad value stops the command before anything starts, with one line naming the variable.
_LATER_SETTINGS: dict[str, tuple[str, ...]] = {
    "worker": ("streams.settings:IngestSettings", "streams.settings:EventTimeSettings"),
    "ingest": ("streams.settings:EventTimeSettings",),
}


def _check_later_settings(command: str) -> None:
    """Raise the ValidationError of the first settings class ``command`` reads later."""
    for spec in _LATER_SETTINGS.get(command, ()):
        module, name = spec.split(":")
        getattr(importlib.import_module(module), name)()


def _archive_preflight(args: argparse.Namespace) -> int | None:
    """``archive run`` connects in ``sinks/archive``, whose error path reports the first failed
    bootstrap at once: wait for the brokers here first, with the bounded retry every command that
    connects has (``ensure_topics`` gives it to worker, ingest and loadgen). The archive's own
    conventions: ``archive: <line>``, exit 2 for a bad setting, 1 when no broker answers. Returns
    the exit code, or None to go on (also when the archive's own configuration check fails: it
    then reports that itself, before anything connects)."""
    if args.command != "archive" or getattr(args, "archive_command", None) != "run":
        return None
    from contest_telemetry.settings import KafkaSettings, TopicSettings
    from contest_telemetry.topics import wait_for_brokers

    try:
        kafka = KafkaSettings(**({"bootstrap_servers": args.bootstrap} if args.bootstrap else {}))
        TopicSettings()
    except ValidationError as exc:  # one line naming the variable (KAFKA_SSL_CAFILE, ...)
        print(f"archive: {settings_error_line(exc)}", file=sys.stderr)
        return 2
    check = getattr(importlib.import_module(_COMMANDS["archive"]), "_settings", None)
    if check is not None:
        try:
            check(args)
        except Exception:
            return None
    try:
        asyncio.run(wait_for_brokers(kafka))
    except ContestTelemetryError as exc:
        print(f"archive: {exc}", file=sys.stderr)
        return 1
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["monitor"]:
        # The monitor keeps the existing tool's exact flags, messages and exit codes.
        from sinks.monitor.cli import main as monitor_main

        return monitor_main(args_list[1:])
    try:
        check_log_settings()  # an unknown CT_LOG_FORMAT stops every command before anything else
        args = build_parser().parse_args(args_list)
        # The one logging set-up of every command (contest_telemetry/logs.py, CT_LOG_FORMAT).
        configure_logging(logging.INFO if args.verbose else logging.WARNING)
        _check_later_settings(args.command)
        failed = _archive_preflight(args)
        if failed is not None:
            return failed
        module = importlib.import_module(_COMMANDS[args.command])
        return int(module.run(args))
    except ContestTelemetryError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"{PROG}: {settings_error_line(exc)}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
