"""Errors of the Prometheus exporter."""

from __future__ import annotations

from contest_telemetry.exceptions import ContestTelemetryError

__all__ = ["ExporterError", "ExporterStartError"]


class ExporterError(ContestTelemetryError):
    """Root of the exporter's errors."""


class ExporterStartError(ExporterError):
    """The ``/metrics`` server could not bind its address/port (in use, bad host, no permission)."""
