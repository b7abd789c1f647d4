"""CT_LOG_FORMAT: one set-up for every command; the JSON lines' stable keys."""

from __future__ import annotations

import json
import logging

import pytest

from contest_telemetry.exceptions import ConfigError
from contest_telemetry.logs import JsonFormatter, configure_logging, log_context


def record(**extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("aiokafka.consumer", logging.WARNING, __file__, 1, "lag %d", (5,), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_have_the_stable_keys_then_the_context() -> None:
    line = JsonFormatter().format(record(**log_context(topic="t", partition=2, offset=9, hub="h")))
    doc = json.loads(line)
    assert list(doc) == ["time", "level", "logger", "message", "topic", "partition", "offset", "hub"]
    assert doc["level"] == "WARNING" and doc["logger"] == "aiokafka.consumer" and doc["message"] == "lag 5"
    assert doc["time"].endswith("Z") and "T" in doc["time"]


def test_exceptions_are_one_field() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        import sys

        rec = logging.LogRecord("faust", logging.ERROR, __file__, 1, "crashed", None, sys.exc_info())
    doc = json.loads(JsonFormatter().format(rec))
    assert "ValueError: bad" in doc["exception"]
    assert "\n" not in JsonFormatter().format(rec)


def test_log_context_refuses_unknown_keys_and_drops_none() -> None:
    assert log_context(topic="t", offset=None) == {"topic": "t"}
    with pytest.raises(ValueError, match="unknown log context keys"):
        log_context(colour="red")


def test_configure_logging_installs_one_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        monkeypatch.setenv("CT_LOG_FORMAT", "json")
        assert configure_logging(logging.INFO) == "json"
        configure_logging(logging.INFO)
        assert len(root.handlers) == 1 and isinstance(root.handlers[0].formatter, JsonFormatter)
        monkeypatch.setenv("CT_LOG_FORMAT", "yaml")
        with pytest.raises(ConfigError, match="CT_LOG_FORMAT='yaml'"):
            configure_logging(logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
