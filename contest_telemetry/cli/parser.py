"""An ArgumentParser whose errors are one clear line and exit status 1 (no usage dump)."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from contest_telemetry.exceptions import ConfigError
from contest_telemetry.schema import contract

__all__ = ["Parser", "command_parser", "iso_time_ms", "positive_float", "positive_int", "share"]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


def command_parser(subparsers: Any, prog: str, help: str, doc: str | None) -> argparse.ArgumentParser:
    """A subcommand's parser whose ``--help`` shows its module's docstring ``doc`` as written."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        prog,
        help=help,
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    return parser


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {raw!r}")
    return value


def positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {raw!r}")
    return value


def share(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {raw!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {raw!r}")
    return value


def iso_time_ms(flag: str, raw: str | None) -> float | None:
    """Epoch ms of an ISO-8601 time given to ``flag`` (naive = UTC), None when not given;
    :class:`ConfigError` naming the flag otherwise."""
    if raw is None:
        return None
    try:
        return contract.iso_time_ms(raw.strip())
    except ValueError:
        raise ConfigError(f"{flag}: not an ISO-8601 time: {raw!r} (e.g. 2026-05-01T12:00:00Z)") from None
