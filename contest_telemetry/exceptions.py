"""The root error of the project; each stage's ``exceptions.py`` derives from it."""

from __future__ import annotations

__all__ = ["ConfigError", "ContestTelemetryError"]


class ContestTelemetryError(Exception):
    """Root of every error this project raises on purpose."""


class ConfigError(ContestTelemetryError):
    """A flag, environment variable or settings value is invalid; the CLI prints it as one line."""
