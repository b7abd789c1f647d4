"""The archive sink: contest events and records as gzip NDJSON chunks with a manifest, in a
directory or under an ``s3://bucket/prefix``."""

from __future__ import annotations

from sinks.archive.exceptions import ArchiveError, ArchiveLockedError, ManifestError
from sinks.archive.reader import ArchiveReader, ArchiveReadError, open_reader
from sinks.archive.settings import ArchiveS3Settings, ArchiveSettings
from sinks.archive.storage import StorageError, open_storage
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import Problem, VerifyReport, verify_archive

__all__ = [
    "ArchiveError",
    "ArchiveLockedError",
    "ArchiveReadError",
    "ArchiveReader",
    "ArchiveS3Settings",
    "ArchiveSettings",
    "ArchiveStore",
    "ManifestError",
    "Problem",
    "StorageError",
    "VerifyReport",
    "open_reader",
    "open_storage",
    "verify_archive",
]
