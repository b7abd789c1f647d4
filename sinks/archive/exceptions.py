"""Errors of the archiver and of ``archive verify``."""

from __future__ import annotations

from contest_telemetry.exceptions import ContestTelemetryError

__all__ = ["ArchiveError", "ArchiveLockedError", "ManifestError"]


class ArchiveError(ContestTelemetryError):
    """The archive directory cannot be written or read as an archive."""


class ManifestError(ArchiveError):
    """``manifest.jsonl`` is broken somewhere other than a torn last line."""


class ArchiveLockedError(ArchiveError):
    """Another archiver holds the lock of this archive directory."""
