"""``contest-telemetry``: one command with a subcommand per job, and the one dispatcher of them all.

Every subcommand (``monitor`` included) is parsed here and runs through one error path
(:func:`contest_telemetry.cli.errors.run_reported`; the standalone entry points ``python -m
sinks.archive`` and ``python -m streams`` use it too). An error the user can act on -- a bad flag
or setting, no broker answering, a Kafka or storage error -- is one line ``<command>: <message>``
on stderr (``contest-telemetry: <message>`` before a subcommand is chosen). Only the project's
own errors (``contest_telemetry/exceptions.py`` and each stage's ``exceptions.py``), a settings
class's ``ValidationError``, Kafka errors and ``OSError`` become that line; any other exception is
a bug and ends with its traceback.

Exit codes (README.md, "Exit codes"; ``tests/contest_telemetry/test_exit_codes.py`` checks each):

====  ===========================================================================================
code  meaning
====  ===========================================================================================
0     done (``monitor``: also when a budget is breached, unless ``--fail-on-breach``)
1     an error, with one line on stderr: a bad flag or setting (the line names it), no broker
      answered, a Kafka or storage error, ``archive verify`` found problems, ``archive replay``
      refused a target, ``loadgen`` could not publish every event, a worker stopped on an error;
      also a bug, then with a Python traceback instead of the one line
2     ``monitor --fail-on-breach``: a budget is breached
3     ``broker status``: no broker is running
130   interrupted (Ctrl-C)
====  ===========================================================================================

``monitor`` keeps the existing tool's contract (``../shared/mission/contract.md``): 0, or 1 with
one ``monitor: <message>`` line for any error; an unexpected exception inside it is reported as
``monitor: internal error: <type>: <message>``, never as a user error.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from contest_telemetry.cli.errors import command_name, run_reported
from contest_telemetry.cli.parser import Parser
from contest_telemetry.exceptions import ConfigError
from contest_telemetry.logs import check_log_settings, configure_logging

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
    "monitor": "sinks.monitor.cli",
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
    return parser


# The monitor prints the existing tool's output and nothing else, whatever CT_LOG_FORMAT says.
_NO_LOGGING = frozenset({"monitor"})


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


def _archive_preflight(args: argparse.Namespace) -> None:
    """``archive run`` connects in ``sinks/archive``, whose error path reports the first failed
    bootstrap at once: check its flags and settings, then wait for the brokers here first, with
    the bounded retry every command that connects has (``ensure_topics`` gives it to worker,
    ingest and loadgen). Raises the error to report."""
    if args.command != "archive" or getattr(args, "archive_command", None) != "run":
        return
    from contest_telemetry.topics import wait_for_brokers

    archive_run, _ = importlib.import_module(_COMMANDS["archive"])._settings(args)
    asyncio.run(wait_for_brokers(archive_run.kafka))


def _dispatch(argv: list[str]) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    module = importlib.import_module(_COMMANDS[args.command])
    if extras:
        # A command may word its own refusal of them (the monitor keeps the existing tool's).
        unknown = getattr(module, "unknown_arguments", None)
        raise (
            unknown(extras)
            if unknown is not None
            else ConfigError(f"unrecognized arguments: {' '.join(extras)}")
        )
    if args.command not in _NO_LOGGING:
        check_log_settings()  # an unknown CT_LOG_FORMAT stops the command before anything else
        # The one logging set-up of every command (contest_telemetry/logs.py, CT_LOG_FORMAT).
        configure_logging(logging.INFO if args.verbose else logging.WARNING)
    _check_later_settings(args.command)
    _archive_preflight(args)
    return int(module.run(args))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return run_reported(command_name(args, list(_COMMANDS), PROG), lambda: _dispatch(args))


if __name__ == "__main__":
    sys.exit(main())
