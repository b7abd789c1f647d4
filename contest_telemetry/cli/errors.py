"""The one error path and the exit codes of every command (the table is in
:mod:`contest_telemetry.cli.main` and README.md, "Exit codes").

An error the user can act on -- the project's own errors (:class:`ContestTelemetryError` and each
stage's subclasses), a settings class's ``ValidationError``, a Kafka error, an ``OSError`` -- is one
line ``<command>: <message>`` on stderr and exit 1. Anything else is a bug: it propagates, with its
traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from contest_telemetry.exceptions import ContestTelemetryError
from contest_telemetry.settings import settings_class, settings_error_line

__all__ = [
    "EXIT_BREACHED",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_RUNNING",
    "EXIT_OK",
    "command_name",
    "error_line",
    "run_reported",
]

EXIT_OK = 0
EXIT_ERROR = 1  # a bad flag or setting, or a failure at run time: one line on stderr
EXIT_BREACHED = 2  # monitor --fail-on-breach: a budget is breached
EXIT_NOT_RUNNING = 3  # broker status: no broker is running
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as a shell reports it)


def error_line(exc: BaseException) -> str | None:
    """The one line for an error the user can act on; None for a bug."""
    if isinstance(exc, ValidationError):
        return settings_error_line(exc) if settings_class(exc) is not None else None
    # Checked through sys.modules: a command that never imported aiokafka (monitor) cannot
    # raise its errors, and should not pay for its import.
    kafka_errors = sys.modules.get("aiokafka.errors")
    if kafka_errors is not None and isinstance(exc, kafka_errors.KafkaError):
        text, name = str(exc), type(exc).__name__
        return text if text.startswith(name) else f"{name}: {text}"
    if isinstance(exc, (ContestTelemetryError, OSError)):
        return str(exc)
    return None


def run_reported(prog: str, call: Callable[[], int]) -> int:
    """Run a command; its exit code, or the one line ``<prog>: <message>`` and :data:`EXIT_ERROR`."""
    try:
        return int(call())
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SystemExit as done:  # --help
        return done.code if isinstance(done.code, int) else EXIT_OK
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise  # a bug: its traceback, never a line that reads like a user error
        print(f"{prog}: {' '.join(line.split())}", file=sys.stderr)
        return EXIT_ERROR


def command_name(argv: Sequence[str], commands: Sequence[str], default: str) -> str:
    """The subcommand ``argv`` names (the first word that is not an option), for the error line's
    prefix even when parsing fails; ``default`` before one is chosen."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return word if word is not None and word in commands else default
