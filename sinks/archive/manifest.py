"""``manifest.jsonl``: one JSON line per archived chunk, appended only after the chunk is durable.

A line is the commit point of a chunk: a file the manifest does not list is not part of the
archive (the archiver deletes such files on start and writes them again from the same offsets).
Each line holds at least ``file`` (relative to the archive root), which is all the monitor needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sinks.archive.exceptions import ManifestError

__all__ = ["MANIFEST_NAME", "ManifestEntry", "append_entry", "fsync_dir", "read_manifest", "recover_manifest"]

MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    file: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    records: int  # Kafka records in [first_offset, last_offset] that were consumed
    lines: int  # NDJSON lines in the file
    skipped: int  # invalid events / records not archived (they go to the DLQ)
    sha256: str
    size: int  # compressed bytes ("bytes" in the JSON line)
    min_event_time: str | None
    max_event_time: str | None

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "file": self.file,
                "topic": self.topic,
                "partition": self.partition,
                "first_offset": self.first_offset,
                "last_offset": self.last_offset,
                "records": self.records,
                "lines": self.lines,
                "skipped": self.skipped,
                "sha256": self.sha256,
                "bytes": self.size,
                "min_event_time": self.min_event_time,
                "max_event_time": self.max_event_time,
            }
        )

    @classmethod
    def from_obj(cls, obj: Any) -> ManifestEntry:
        """Validate one decoded line; raise ``ValueError`` naming what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("entry is not a JSON object")

        def need(key: str, kind: type | tuple[type, ...]) -> Any:
            value = obj.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{key!r} missing or not {getattr(kind, '__name__', kind)}")
            return value

        entry = cls(
            file=need("file", str),
            topic=need("topic", str),
            partition=need("partition", int),
            first_offset=need("first_offset", int),
            last_offset=need("last_offset", int),
            records=need("records", int),
            lines=need("lines", int),
            skipped=obj.get("skipped", 0) if isinstance(obj.get("skipped"), int) else 0,
            sha256=need("sha256", str),
            size=need("bytes", int),
            min_event_time=obj.get("min_event_time") if isinstance(obj.get("min_event_time"), str) else None,
            max_event_time=obj.get("max_event_time") if isinstance(obj.get("max_event_time"), str) else None,
        )
        if entry.partition < 0 or entry.first_offset < 0 or entry.last_offset < entry.first_offset:
            raise ValueError(
                f"bad bounds: partition {entry.partition}, {entry.first_offset}..{entry.last_offset}"
            )
        return entry


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class ManifestRead:
    entries: list[ManifestEntry]
    good_size: int  # bytes up to the end of the last whole, valid line
    torn: bytes  # the torn tail (b"" when the manifest ends cleanly)
    errors: list[tuple[int, str]]  # (line number, reason) of broken lines before the tail


def read_manifest(path: Path) -> ManifestRead:
    """Parse a manifest; a last line without newline or that is not a valid entry is 'torn'."""
    data = path.read_bytes() if path.exists() else b""
    entries: list[ManifestEntry] = []
    errors: list[tuple[int, str]] = []
    pos = 0
    number = 0
    good = 0
    torn = b""
    while pos < len(data):
        end = data.find(b"\n", pos)
        number += 1
        last = end < 0 or end == len(data) - 1
        line = data[pos:] if end < 0 else data[pos:end]
        try:
            if end < 0:
                raise ValueError("no newline at the end")
            if not line.strip():
                raise ValueError("blank line")
            entries.append(ManifestEntry.from_obj(orjson.loads(line)))
            good = end + 1
        except (ValueError, orjson.JSONDecodeError) as error:
            if last:
                torn = data[pos:]
            else:
                errors.append((number, str(error)))
                good = end + 1
        if end < 0:
            break
        pos = end + 1
    return ManifestRead(entries, good, torn, errors)


def recover_manifest(path: Path) -> list[ManifestEntry]:
    """Read the manifest for the archiver: cut a torn last line off (durably), refuse other damage."""
    read = read_manifest(path)
    if read.errors:
        number, reason = read.errors[0]
        raise ManifestError(
            f"{path}:{number}: {reason} (run `archive verify`; only a torn last line is repaired)"
        )
    if read.torn:
        with path.open("r+b") as handle:
            handle.truncate(read.good_size)
            handle.flush()
            os.fsync(handle.fileno())
    return read.entries


def append_entry(fd: int, entry: ManifestEntry) -> None:
    """Append one line with a single write and fsync it: the chunk is archived once this returns."""
    line = entry.to_json() + b"\n"
    written = os.write(fd, line)
    if written != len(line):  # a short write on a regular file means the disk is full
        raise OSError(f"short write to the manifest ({written} of {len(line)} bytes)")
    os.fsync(fd)
