"""The archive directory: chunk files, the manifest and crash recovery.

Every chunk goes through the same steps, in this order:

1. lines are streamed into ``.staging/<name>.tmp`` (gzip, ``mtime=0`` so a re-write is identical);
2. the temp file is fsynced and renamed to its final path; the directory is fsynced (and the
   parents of any directory created for it);
3. one manifest line is appended and fsynced: from here on the chunk is archived;
4. only then does the caller commit the Kafka offset (advisory: restarts resume from the manifest).

On start (:meth:`ArchiveStore.open`): a torn last manifest line is cut off, ``.staging`` is
emptied, chunk files the manifest does not list are deleted (a crash between 2 and 3: they are
written again from the same offsets), and every partition resumes at its last archived offset + 1.
So a crash at any point leaves no duplicate line, no gap, and no file a reader could take for a
whole one (readers go through the manifest, which only lists finished files).

Offsets the broker no longer has when the archiver asks for them (retention overtook it) are
recorded with :meth:`ArchiveStore.record_gap`: the open chunk is closed at the last offset read,
and a ``gap`` entry (an empty file, same steps) covers the missing offsets, so no chunk ever
claims an offset it did not read and ``archive verify`` reports the gap with its reason.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import posixpath
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

from contest_telemetry.schema.contract import ms_to_iso
from sinks.archive.exceptions import ArchiveError
from sinks.archive.manifest import CHUNK, GAP, ManifestEntry
from sinks.archive.manifest_log import ManifestLog, is_manifest_key, manifest_for
from sinks.archive.paths import TMP_SUFFIX, chunk_relpath, parse_chunk_name, safe_component
from sinks.archive.storage import LocalStorage, Storage, Upload, open_storage

__all__ = ["LOCK_NAME", "STAGING_DIR", "ArchiveStore", "crash_point", "iso_ms"]

STAGING_DIR = LocalStorage.STAGING
LOCK_NAME = LocalStorage.LOCK
_CRASH_ENV = "CT_ARCHIVE_CRASH_AT"
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """Test hook: ``CT_ARCHIVE_CRASH_AT=<name>:<n>`` SIGKILLs this process the n-th time it
    passes ``name`` (after-tmp, after-rename, after-manifest, after-commit)."""
    spec = os.environ.get(_CRASH_ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(count or 1):
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def iso_ms(ms: float | None) -> str | None:
    """Epoch ms as ISO-8601 UTC with milliseconds, or None (out of range too)."""
    if ms is None:
        return None
    try:
        return ms_to_iso(ms)
    except (OverflowError, OSError, ValueError):
        return None


class _HashingWriter(io.RawIOBase):
    """The raw temp file under gzip: hashes and counts the compressed bytes as they pass."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        self.handle.write(view)
        return len(view)

    def flush(self) -> None:
        self.handle.flush()


@dataclass
class _OpenChunk:
    topic: str
    partition: int
    first: int
    index: int  # offset // chunk_records
    upload: Upload
    raw: _HashingWriter
    gz: gzip.GzipFile
    last: int = -1
    first_read: int | None = None  # the first offset actually read (first may be lower: skipped)
    kind: str = CHUNK
    reason: str | None = None  # of a gap
    opened: float = field(default_factory=time.monotonic)
    records: int = 0
    lines: int = 0
    skipped: int = 0
    min_ms: float | None = None
    max_ms: float | None = None
    min_kafka_ms: float | None = None

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.gz.close()
        self.upload.discard()


@dataclass
class ArchiveStore:
    """Writes chunks for any number of (topic, partition); one process per archive.

    ``root`` is a directory (locked: a second archiver is refused) or an ``s3://bucket/prefix``
    URL (sinks/archive/storage.py; object stores have no lock: run one archiver per prefix, as
    one Kafka Connect task owns a partition)."""

    root: Path | str
    chunk_records: int = 10_000
    compress_level: int = 6
    # The last archived offset per partition: all a running archiver needs from the manifest (one
    # int per partition, where a list of entries would grow with every chunk closed).
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)  # unlisted files deleted on open
    storage: Storage | None = None  # None: opened from ``root``
    _open: dict[tuple[str, int], _OpenChunk] = field(default_factory=dict)
    _manifest: ManifestLog | None = None
    _locked: bool = False

    @property
    def location(self) -> str:
        """The archive's path or URL, as reports show it."""
        return self._storage().location.url

    @property
    def storage_retries(self) -> int:
        """Object-store requests retried so far (0 for a directory)."""
        return int(getattr(self.storage, "retries", 0))

    def _storage(self) -> Storage:
        if self.storage is None:
            self.storage = open_storage(self.root)
        return self.storage

    # -- open / close ----------------------------------------------------------------------------
    def open(self) -> ArchiveStore:
        if self.chunk_records < 1:
            raise ArchiveError(f"chunk size must be >= 1 record (got {self.chunk_records})")
        storage = self._storage()
        storage.acquire()
        self._locked = True
        try:
            self._recover(storage)
        except BaseException:
            self.close()
            raise
        return self

    def _recover(self, storage: Storage) -> None:
        manifest = manifest_for(storage)
        self._manifest = manifest
        chunk_keys = [
            info.key
            for info in storage.list_objects()
            if not is_manifest_key(info.key) and parse_chunk_name(posixpath.basename(info.key)) is not None
        ]
        if not manifest.exists():
            if chunk_keys:
                raise ArchiveError(
                    f"{storage.location.url} holds {len(chunk_keys)} chunk file(s) but no manifest "
                    f"({manifest.name}); refusing to treat them as unarchived (restore the manifest "
                    "or use a new location)"
                )
            manifest.create()
        entries = manifest.recover()
        listed = {entry.file for entry in entries}
        for entry in entries:
            key = (entry.topic, entry.partition)
            self.positions[key] = max(self.positions.get(key, -1), entry.last_offset)
        storage.begin_writing()
        for name in chunk_keys:
            if name not in listed:
                # A crash between the chunk and its manifest entry: written again from the same offsets.
                storage.delete(name)
                self.removed.append(name)
        storage.sync_deletes()

    def close(self) -> None:
        """Drop open chunks (not archived: they will be read again) and release the archive."""
        for chunk in self._open.values():
            chunk.discard()
        self._open.clear()
        if self._manifest is not None:
            self._manifest.close()
            self._manifest = None
        if self._locked and self.storage is not None:
            self.storage.release()
            self._locked = False

    def __enter__(self) -> ArchiveStore:
        return self.open() if not self._locked else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- positions -------------------------------------------------------------------------------
    def next_offset(self, topic: str, partition: int) -> int | None:
        """Where this partition resumes (last archived + 1), None when nothing is archived yet."""
        last = self.positions.get((topic, partition))
        return None if last is None else last + 1

    def read_position(self, topic: str, partition: int) -> int | None:
        """The next offset this partition expects: after its open chunk's last record, else
        :meth:`next_offset` (None when nothing was read or archived yet)."""
        chunk = self._open.get((topic, partition))
        return chunk.last + 1 if chunk is not None else self.next_offset(topic, partition)

    def open_chunks(self) -> list[tuple[str, int]]:
        return list(self._open)

    def opened_at(self, topic: str, partition: int) -> float | None:
        """``time.monotonic()`` when the partition's open chunk was started (None: none open)."""
        chunk = self._open.get((topic, partition))
        return None if chunk is None else chunk.opened

    def record_gap(
        self, topic: str, partition: int, first_missing: int, last_missing: int, reason: str
    ) -> list[ManifestEntry]:
        """Offsets ``first_missing..last_missing`` are gone from the broker (``reason``): close the
        open chunk (it ends at the last offset read), archive a ``gap`` entry for them, and resume
        after them. Returns the entries written (the closed chunk, if any, then the gap)."""
        key = (topic, partition)
        resume = self.read_position(topic, partition)
        if first_missing < 0 or last_missing < first_missing:
            raise ValueError(f"bad gap {first_missing}..{last_missing}")
        if resume is not None and first_missing < resume:
            raise ArchiveError(
                f"{topic}[{partition}]: gap {first_missing}..{last_missing} starts before offset "
                f"{resume}, which is archived or being archived"
            )
        closed: list[ManifestEntry] = []
        if key in self._open:
            closed.append(self._finish(key))
        # Like a chunk, the gap starts right after the last offset read (offsets Kafka skipped
        # before it, e.g. a transaction marker, are covered too).
        chunk = self._start(topic, partition, first_missing, last_missing // self.chunk_records)
        chunk.last = last_missing
        chunk.kind = GAP
        chunk.reason = reason
        chunk.min_kafka_ms = time.time() * 1000.0  # the gap file's date: when it was found
        closed.append(self._finish(key))
        return closed

    # -- writing ---------------------------------------------------------------------------------
    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        kafka_ms: float,
        lines: list[tuple[bytes, float]],
        skipped: int = 0,
    ) -> list[ManifestEntry]:
        """Archive one Kafka record's lines; return the chunks this closed (0, 1 or 2)."""
        key = (topic, partition)
        closed: list[ManifestEntry] = []
        last = self.positions.get(key)
        if last is not None and offset <= last:
            return closed  # already archived (a re-delivery after a seek): never twice
        index = offset // self.chunk_records
        chunk = self._open.get(key)
        if chunk is not None and offset <= chunk.last:
            return closed
        if chunk is not None and chunk.index != index:
            closed.append(self._finish(key))
            chunk = None
        if chunk is None:
            chunk = self._start(topic, partition, offset, index)
        if lines:
            chunk.gz.write(b"".join(line + b"\n" for line, _ in lines))
            times = [ms for _, ms in lines]
            low, high = min(times), max(times)
            chunk.min_ms = low if chunk.min_ms is None else min(chunk.min_ms, low)
            chunk.max_ms = high if chunk.max_ms is None else max(chunk.max_ms, high)
        chunk.min_kafka_ms = kafka_ms if chunk.min_kafka_ms is None else min(chunk.min_kafka_ms, kafka_ms)
        if chunk.first_read is None:
            chunk.first_read = offset
        chunk.last = offset
        chunk.records += 1
        chunk.lines += len(lines)
        chunk.skipped += skipped
        if offset >= (index + 1) * self.chunk_records - 1:
            closed.append(self._finish(key))
        return closed

    def _start(self, topic: str, partition: int, offset: int, index: int) -> _OpenChunk:
        # A chunk covers every offset since the last archived one: offsets Kafka skips
        # (transaction markers, compaction) must not read as gaps.
        resume = self.next_offset(topic, partition)
        first = resume if resume is not None and resume < offset else offset
        upload = self._storage().new_upload(f"{safe_component(topic)}-p{partition}-{first:020d}{TMP_SUFFIX}")
        raw = _HashingWriter(upload.handle)
        gz = gzip.GzipFile(
            filename="", mode="wb", fileobj=cast(Any, raw), compresslevel=self.compress_level, mtime=0
        )
        chunk = _OpenChunk(topic, partition, first, index, upload, raw, gz)
        self._open[(topic, partition)] = chunk
        return chunk

    def _finish(self, key: tuple[str, int]) -> ManifestEntry:
        chunk = self._open.pop(key)
        date_ms = chunk.min_ms if chunk.min_ms is not None else chunk.min_kafka_ms
        relative = chunk_relpath(chunk.topic, chunk.partition, chunk.first, chunk.last, date_ms)
        try:
            chunk.gz.close()
            chunk.upload.seal()
            crash_point("after-tmp")
            chunk.upload.commit(relative)  # durable under its final name (rename / one PUT)
        except BaseException:
            chunk.discard()
            raise
        crash_point("after-rename")
        entry = ManifestEntry(
            file=relative,
            topic=chunk.topic,
            partition=chunk.partition,
            first_offset=chunk.first,
            last_offset=chunk.last,
            records=chunk.records,
            lines=chunk.lines,
            skipped=chunk.skipped,
            sha256=chunk.raw.sha.hexdigest(),
            size=chunk.raw.size,
            min_event_time=iso_ms(chunk.min_ms),
            max_event_time=iso_ms(chunk.max_ms),
            kind=chunk.kind,
            first_read_offset=chunk.first_read,
            last_read_offset=None if chunk.kind == GAP else chunk.last,
            reason=chunk.reason,
        )
        if self._manifest is None:
            raise ArchiveError("archive store is not open")
        self._manifest.append(entry)
        self.positions[key] = chunk.last
        crash_point("after-manifest")
        return entry

    def flush(self, topic: str, partition: int) -> ManifestEntry | None:
        """Close the open chunk of a partition early (graceful stop, idle flush)."""
        if (topic, partition) not in self._open:
            return None
        return self._finish((topic, partition))

    def flush_all(self) -> list[ManifestEntry]:
        return [self._finish(key) for key in list(self._open)]

    def drop(self, topic: str, partition: int) -> None:
        """Forget a partition's open chunk (it will be consumed again from the manifest)."""
        chunk = self._open.pop((topic, partition), None)
        if chunk is not None:
            chunk.discard()
