"""The contest workflow monitor: NDJSON contest telemetry summarised against DES-BENCH-01 budgets."""

from __future__ import annotations

from sinks.monitor.inputs import InputError, open_lines
from sinks.monitor.render import render_json, render_table, render_text
from sinks.monitor.summary import SummaryBuilder, percentile, summarise

__all__ = [
    "InputError",
    "SummaryBuilder",
    "open_lines",
    "percentile",
    "render_json",
    "render_table",
    "render_text",
    "summarise",
]
