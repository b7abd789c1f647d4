"""How every command logs: ``CT_LOG_FORMAT=text|json``, set up in this one place.

Each entry point (``contest-telemetry``, ``python -m streams``, ``python -m sinks.archive``) calls
:func:`configure_logging` once, before anything logs: one handler on the root logger, on stderr,
with the chosen formatter. faust's, mode's and aiokafka's loggers propagate to the root, so their
records go through the same formatter (the worker starts faust with ``override_logging=False``,
see streams/cli.py, so faust does not install handlers of its own).

``json`` writes one object per line with stable keys: ``time`` (UTC, ISO 8601, milliseconds),
``level``, ``logger``, ``message``, then the context a record carries (``topic``, ``partition``,
``offset``, ``hub``, ... passed as ``extra=log_context(...)``), and ``exception`` with the
traceback when there is one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from typing import IO, Any, Literal

import orjson
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from contest_telemetry.exceptions import ConfigError
from contest_telemetry.schema import ms_to_iso

__all__ = [
    "CONTEXT_KEYS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "LogSettings",
    "announce",
    "check_log_settings",
    "configure_logging",
    "line_stream",
    "log_context",
    "quiet_producer_probe",
]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Context a record may carry (``extra=``), in this order after the four fixed keys.
CONTEXT_KEYS = ("topic", "partition", "offset", "first_offset", "last_offset", "hub", "group", "records")


class LogSettings(BaseSettings):
    """How every command logs (env prefix ``CT_LOG_``)."""

    model_config = SettingsConfigDict(env_prefix="CT_LOG_", extra="ignore")

    format: Literal["text", "json"] = Field(
        default="text",
        description="'text': one human-readable line per record; 'json': one JSON object per line with "
        "the keys time, level, logger, message and the record's context (topic, partition, offset, hub, "
        "...). Applies to every command and to faust's and aiokafka's records.",
    )


def log_context(**context: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the context keys a JSON line carries (None values left out)."""
    unknown = set(context) - set(CONTEXT_KEYS)
    if unknown:
        raise ValueError(f"unknown log context keys: {sorted(unknown)}")
    return {key: value for key, value in context.items() if value is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": ms_to_iso(record.created * 1000.0),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for key in CONTEXT_KEYS:
            value = fields.get(key)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=repr).decode()


def _settings() -> LogSettings:
    try:
        return LogSettings()
    except ValidationError as exc:
        from contest_telemetry.settings import settings_error_line

        raise ConfigError(settings_error_line(exc)) from None


def check_log_settings() -> None:
    """Raise :class:`ConfigError` (one line naming CT_LOG_FORMAT) when the settings are invalid."""
    _settings()


def announce(logger: str, message: str) -> None:
    """A line a command prints whatever the log level (where it serves, what it removed): plain in
    the text format, a JSON line at INFO through the root handler's formatter in the json format,
    so a JSON log stays all JSON."""
    handlers = logging.getLogger().handlers
    formatter = handlers[0].formatter if handlers else None
    if isinstance(formatter, JsonFormatter):
        message = formatter.format(logging.LogRecord(logger, logging.INFO, __file__, 0, message, None, None))
    print(message, file=sys.stderr, flush=True)


_MAX_PENDING = 64 * 1024


class _AnnouncedLines(io.TextIOBase):
    """A text stream whose every complete line goes through :func:`announce`."""

    def __init__(self, logger: str) -> None:
        self.logger = logger
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        if len(self._pending) > _MAX_PENDING:  # a writer that never ends its line: bounded
            lines.append(self._pending)
            self._pending = ""
        for line in lines:
            announce(self.logger, line)
        return len(text)


def line_stream(logger: str) -> IO[str]:
    """Where a command's periodic progress lines go: stderr as they are in the text format, one JSON
    record per line (through :func:`announce`) in the json format."""
    handlers = logging.getLogger().handlers
    if handlers and isinstance(handlers[0].formatter, JsonFormatter):
        return _AnnouncedLines(logger)  # type: ignore[return-value]
    return sys.stderr


def configure_logging(level: int | str, *, text_format: str = TEXT_FORMAT) -> str:
    """Replace the root logger's handlers by one stderr handler in ``CT_LOG_FORMAT``; returns the
    format. Raises :class:`ConfigError` (one line) for an unknown format."""
    chosen = _settings().format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return chosen


@contextlib.contextmanager
def quiet_producer_probe() -> Iterator[None]:
    """aiokafka logs a refused InitProducerId at ERROR; where idempotence or transactions are
    'auto' a refusal is an expected answer (the caller falls back and warns once), not an error."""
    loggers = [logging.getLogger(n) for n in ("aiokafka.producer.sender", "aiokafka.producer.producer")]
    previous = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, previous, strict=True):
            lg.setLevel(level)
