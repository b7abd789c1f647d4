"""``contest-telemetry monitor``: summarise contest telemetry NDJSON against DES-BENCH-01.

Exit codes (the table of every command: README.md, "Exit codes"): 0 on success (also when a
budget is breached, as the JavaScript monitor did), 1 with one ``monitor: <message>`` line on
stderr for any error, 2 when ``--fail-on-breach`` is given and a budget is breached.

Lines longer than --max-line-bytes (default 1 MiB) or nested deeper than 1024 levels,
manifest lines that are not archive entries and corrupt files of an archive directory
are skipped; after the output, ``monitor: ...`` lines on stderr say what and why.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from rich.console import Console

from contest_telemetry.cli.errors import EXIT_BREACHED, EXIT_ERROR, EXIT_OK, run_reported
from contest_telemetry.cli.parser import Parser, command_parser
from contest_telemetry.exceptions import ConfigError
from sinks.monitor.inputs import DEFAULT_MAX_LINE_BYTES, InputError, Skips, open_lines
from sinks.monitor.render import LazyArray, render_table, render_text, write_json
from sinks.monitor.summary import (
    DEFAULT_ARMING_BUDGET_MS,
    DEFAULT_RESOLUTION_BUDGET_MS,
    MAX_DEPTH,
    SummaryBuilder,
    parse_time_ms,
)

__all__ = ["EXIT_BREACHED", "EXIT_ERROR", "EXIT_OK", "PROG", "add_parser", "main", "run", "unknown_arguments"]

PROG = "monitor"

_FORMATS = ("text", "json", "table")
# A plain decimal: Python's float() would also take "inf", "nan" and "1_000".
_DECIMAL = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    # Values are taken as strings and validated in run(), so errors read the same
    # whether this parser is standalone or a subcommand of contest-telemetry.
    parser.add_argument("--input", "-i", metavar="PATH", help="NDJSON file, .gz, archive dir or - (stdin)")
    parser.add_argument("--json", action="store_true", help="same as --format json")
    parser.add_argument("--format", metavar="FORMAT", help="text (default), json or table")
    parser.add_argument(
        "--arming-threshold", metavar="MS", help=f"arming p95 budget (default {DEFAULT_ARMING_BUDGET_MS:g})"
    )
    parser.add_argument(
        "--resolution-threshold",
        metavar="MS",
        help=f"resolution p95 budget (default {DEFAULT_RESOLUTION_BUDGET_MS:g})",
    )
    parser.add_argument("--fail-on-breach", action="store_true", help="exit 2 when a budget is breached")
    parser.add_argument(
        "--topic",
        action="append",
        metavar="TOPIC",
        help="archive dir: read only this topic's files (repeatable)",
    )
    parser.add_argument("--hub", action="append", metavar="HUB", help="keep only this hub (repeatable)")
    parser.add_argument("--since", metavar="TIME", help="keep events at or after (ISO-8601 or epoch ms)")
    parser.add_argument("--until", metavar="TIME", help="keep events before (ISO-8601 or epoch ms)")
    parser.add_argument(
        "--max-line-bytes",
        metavar="BYTES",
        help=f"skip longer lines, with a note on stderr (default {DEFAULT_MAX_LINE_BYTES})",
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``monitor`` on a ``contest-telemetry`` subparsers action; dispatch to :func:`run`."""
    parser = command_parser(
        subparsers, PROG, "summarise contest telemetry NDJSON against the DES-BENCH-01 budgets", __doc__
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def unknown_arguments(extras: list[str]) -> ConfigError:
    """The existing tool's refusal of arguments it does not know (only the first is named)."""
    kind = "unknown argument" if extras[0].startswith("-") else "unexpected argument"
    return ConfigError(f"{kind}: {extras[0]}")


@dataclass(frozen=True)
class _Options:
    source: str | None
    topics: list[str] | None
    output: str
    arming_budget: float
    resolution_budget: float
    fail_on_breach: bool
    hubs: tuple[str, ...] | None
    since_ms: float | None
    until_ms: float | None
    max_line_bytes: int


def _threshold(raw: str | None, name: str, default: float) -> float:
    if raw is None:
        return default
    value = float(raw) if _DECIMAL.fullmatch(raw) else math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} threshold must be a positive number (got {raw!r})")
    return value


def _max_line_bytes(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_MAX_LINE_BYTES
    value = int(raw) if re.fullmatch(r"[0-9]+", raw) else 0
    if value < 1:
        raise ConfigError(f"--max-line-bytes must be a positive integer (got {raw!r})")
    return value


def _time(raw: str | None, flag: str) -> float | None:
    if raw is None:
        return None
    value = parse_time_ms(float(raw)) if _DECIMAL.fullmatch(raw) else parse_time_ms(raw.strip())
    if value is None:
        raise ConfigError(f"{flag} must be an ISO-8601 time or epoch milliseconds (got {raw!r})")
    return value


def _options(args: argparse.Namespace) -> _Options:
    output = args.format if args.format is not None else "text"
    if output not in _FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(_FORMATS)} (got {output!r})")
    if args.json:
        if args.format is not None and output != "json":
            raise ConfigError(f"--json conflicts with --format {output}")
        output = "json"
    since = _time(args.since, "--since")
    until = _time(args.until, "--until")
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be before --until")
    return _Options(
        source=args.input,
        topics=args.topic,
        output=output,
        arming_budget=_threshold(args.arming_threshold, "arming", DEFAULT_ARMING_BUDGET_MS),
        resolution_budget=_threshold(args.resolution_threshold, "resolution", DEFAULT_RESOLUTION_BUDGET_MS),
        fail_on_breach=bool(args.fail_on_breach),
        hubs=tuple(args.hub) if args.hub else None,
        since_ms=since,
        until_ms=until,
        max_line_bytes=_max_line_bytes(getattr(args, "max_line_bytes", None)),
    )


def _writer(stream: IO[str]) -> Callable[[str], object]:
    # Write UTF-8 whatever the locale: the text form carries "⚠" and the JSON raw ids.
    buffer: BinaryIO | None = getattr(stream, "buffer", None)
    if buffer is None:
        return stream.write
    stream.flush()
    return lambda text: buffer.write(text.encode("utf-8", "surrogatepass"))


def _write(stream: IO[str], text: str) -> None:
    _writer(stream)(text)
    stream.flush()


def run(args: argparse.Namespace, *, stdin: BinaryIO | None = None, stdout: IO[str] | None = None) -> int:
    """Run the monitor for parsed arguments; returns the exit code."""
    out = stdout if stdout is not None else sys.stdout
    try:
        return _run(args, stdin, out)
    except Exception as error:  # the last resort: one line, never a traceback
        message = "out of memory" if isinstance(error, MemoryError) else f"{type(error).__name__}: {error}"
        print(f"{PROG}: internal error: {message}", file=sys.stderr)
        return EXIT_ERROR


def _run(args: argparse.Namespace, stdin: BinaryIO | None, out: IO[str]) -> int:
    try:
        options = _options(args)
        skips = Skips(options.max_line_bytes)
        builder = SummaryBuilder(
            hubs=options.hubs,
            since_ms=options.since_ms,
            until_ms=options.until_ms,
            # Only the JSON form prints the failure events; the others need the count.
            keep_failures=options.output == "json",
        )
        builder.feed_lines(open_lines(options.source, stdin, options.topics, skips))
    except (ConfigError, InputError) as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return EXIT_ERROR
    except (OSError, EOFError, zlib.error) as error:
        print(f"{PROG}: cannot read input: {error}", file=sys.stderr)
        return EXIT_ERROR
    budgets = {"arming_budget": options.arming_budget, "resolution_budget": options.resolution_budget}
    summary = builder.build(include_raw=False, **budgets)
    try:
        _output(summary, builder, options, out, budgets)
    except OSError as error:  # a closed pipe (`monitor ... | head`), a full disk
        _silence(out)
        print(f"{PROG}: cannot write output: {error}", file=sys.stderr)
        return EXIT_ERROR
    notes = skips.report()
    if builder.too_deep:
        plural = "line" if builder.too_deep == 1 else "lines"
        notes.append(f"skipped {builder.too_deep} {plural} nested deeper than {MAX_DEPTH} levels")
    for note in notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    breached = summary["durations"]["arming"]["breached"] or summary["durations"]["resolution"]["breached"]
    return EXIT_BREACHED if options.fail_on_breach and breached else EXIT_OK


def _output(
    summary: dict[str, Any],
    builder: SummaryBuilder,
    options: _Options,
    out: IO[str],
    budgets: dict[str, float],
) -> None:
    if options.output == "json":
        # raw is streamed from the records: the whole document never sits in memory.
        summary["raw"] = {
            "contests": LazyArray(record.as_dict() for record in builder.contests.values()),
            "workflowFailures": LazyArray(builder.failures),
        }
        write = _writer(out)
        write_json(summary, write)
        write("\n")
        out.flush()
    elif options.output == "table":
        # Piped output has no terminal width; 80 columns would truncate the figures.
        console = Console(file=out, width=None if out.isatty() else 160)
        console.print(render_table(summary, builder.by_hub(**budgets)))
    else:
        _write(out, render_text(summary) + "\n")


def _silence(out: IO[str]) -> None:
    """After a write error on stdout, point it at /dev/null so the exit flush cannot fail again."""
    if out is not sys.stdout:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (``python -m sinks.monitor``)."""
    parser = Parser(prog=PROG, description=__doc__, allow_abbrev=False)
    _add_arguments(parser)

    def call() -> int:
        args, extras = parser.parse_known_args(argv)
        if extras:
            raise unknown_arguments(extras)
        return run(args)

    return run_reported(PROG, call)
