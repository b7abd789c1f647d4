"""The archive sink: contest events and records as gzip NDJSON chunks with a manifest."""

from __future__ import annotations

from sinks.archive.exceptions import ArchiveError, ArchiveLockedError, ManifestError
from sinks.archive.settings import ArchiveSettings
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import Problem, VerifyReport, verify_archive

__all__ = [
    "ArchiveError",
    "ArchiveLockedError",
    "ArchiveSettings",
    "ArchiveStore",
    "ManifestError",
    "Problem",
    "VerifyReport",
    "verify_archive",
]
