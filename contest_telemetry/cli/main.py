"""``contest-telemetry``: one command with a subcommand per job.

Errors the user can fix (bad flags, bad config, a broker that cannot start) print one line,
``contest-telemetry: <message>``, and exit 1.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from contest_telemetry.cli.parser import Parser
from contest_telemetry.exceptions import ContestTelemetryError
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


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["monitor"]:
        # The monitor keeps the existing tool's exact flags, messages and exit codes.
        from sinks.monitor.cli import main as monitor_main

        return monitor_main(args_list[1:])
    try:
        args = build_parser().parse_args(args_list)
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
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
