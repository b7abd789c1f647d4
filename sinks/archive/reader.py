"""Read an archive, local or on object storage, chunk by chunk in per-partition offset order.

    reader = open_reader("s3://bucket/prefix")      # or a directory
    for entry in reader.chunks(topic="contest.events"):   # (partition, first offset) order
        for line in reader.lines(entry):                  # bytes of one archived event/record
            ...

:meth:`ArchiveReader.entries` is the manifest (every entry, gaps included, in manifest order);
:meth:`ArchiveReader.chunks` the chunk entries of one topic (or all) sorted by topic, partition
and first offset, gaps left out (:meth:`ArchiveReader.gaps` lists them);
:meth:`ArchiveReader.lines` checks a chunk's size and sha256 against its entry before yielding
its first line and its line count after the last, so a caller never republishes part of a
damaged chunk unknowingly; :meth:`ArchiveReader.records` walks every line with its place.
Anything wrong is an :class:`ArchiveReadError` naming the chunk (run ``archive verify``).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from sinks.archive.exceptions import ArchiveError
from sinks.archive.manifest import ManifestEntry
from sinks.archive.manifest_log import manifest_for
from sinks.archive.storage import Storage, open_storage

__all__ = ["DEFAULT_MAX_LINE_BYTES", "ArchiveReadError", "ArchiveReader", "ArchivedLine", "open_reader"]

DEFAULT_MAX_LINE_BYTES = 4 << 20
_BLOCK = 1 << 20


class ArchiveReadError(ArchiveError):
    """The archive, or one of its chunks, is not what its manifest says."""


@dataclass(frozen=True, slots=True)
class ArchivedLine:
    entry: ManifestEntry  # the chunk (topic, partition, offsets)
    index: int  # 0-based line number within the chunk
    line: bytes  # the archived JSON, without its newline


class ArchiveReader:
    """An archive opened for reading (nothing is read until asked)."""

    def __init__(self, storage: Storage, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.storage = storage
        self.location = storage.location.url
        self.max_line_bytes = max_line_bytes
        self._entries: list[ManifestEntry] | None = None

    def entries(self) -> list[ManifestEntry]:
        """Every manifest entry; an archive with a broken manifest is refused."""
        if self._entries is None:
            location = self.storage.location
            if location.path is not None and not location.path.is_dir():
                raise ArchiveReadError(f"not an archive directory: {self.location}")
            scan = manifest_for(self.storage).scan()
            if not scan.found:
                raise ArchiveReadError(f"{self.location}: no manifest (not an archive)")
            # A torn last line of manifest.jsonl is a chunk not yet listed: not part of the archive.
            broken = [p for p in scan.problems if p[0] == "manifest" and "torn last line" not in p[2]]
            if broken:
                _, where, detail = broken[0]
                raise ArchiveReadError(f"{self.storage.describe(where)}: {detail} (run `archive verify`)")
            self._entries = scan.entries
        return self._entries

    def chunks(self, topic: str | None = None) -> list[ManifestEntry]:
        """Chunk entries (no gaps) of ``topic`` (None: all), by topic, partition, first offset."""
        chosen = [e for e in self.entries() if not e.is_gap and (topic is None or e.topic == topic)]
        return sorted(chosen, key=lambda e: (e.topic, e.partition, e.first_offset))

    def gaps(self, topic: str | None = None) -> list[ManifestEntry]:
        return [e for e in self.entries() if e.is_gap and (topic is None or e.topic == topic)]

    def lines(self, entry: ManifestEntry) -> Iterator[bytes]:
        """The lines of one chunk, checked against its entry (see the module doc)."""
        from sinks.monitor.inputs import Skips, iter_lines

        key = self.storage.normalize(entry.file)
        if key is None:
            raise ArchiveReadError(f"manifest entry {entry.file!r} lies outside the archive")
        try:
            handle = self.storage.open(key)
        except OSError as error:
            raise ArchiveReadError(f"cannot read {entry.file}: {error}") from error
        with handle:
            sha = hashlib.sha256()
            size = 0
            while block := handle.read(_BLOCK):
                sha.update(block)
                size += len(block)
            if size != entry.size or sha.hexdigest() != entry.sha256:
                raise ArchiveReadError(
                    f"{entry.file}: size or sha256 differs from the manifest (run `archive verify`)"
                )
            handle.seek(0)
            skips = Skips(self.max_line_bytes)
            count = 0
            try:
                for line in iter_lines(handle, skips):
                    count += 1
                    yield line
            except (OSError, EOFError, zlib.error) as error:
                raise ArchiveReadError(f"{entry.file}: does not decompress: {error}") from error
        if skips.long_lines:
            raise ArchiveReadError(
                f"{entry.file}: {skips.long_lines} line(s) longer than {self.max_line_bytes} bytes"
            )
        if count != entry.lines:
            raise ArchiveReadError(f"{entry.file}: {count} lines, the manifest says {entry.lines}")

    def records(self, topic: str | None = None) -> Iterator[ArchivedLine]:
        """Every line of :meth:`chunks`, in per-partition order."""
        for entry in self.chunks(topic):
            for index, line in enumerate(self.lines(entry)):
                yield ArchivedLine(entry, index, line)


def open_reader(
    location: str | os.PathLike[str], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> ArchiveReader:
    """A reader of the archive at ``location`` (a directory or ``s3://bucket/prefix``; S3 endpoint
    and credentials from CT_ARCHIVE_S3_* / AWS_*). ConfigError for a malformed URL."""
    return ArchiveReader(open_storage(location), max_line_bytes)
