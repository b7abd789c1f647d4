"""``manifest.jsonl``: one JSON line per archived chunk, appended only after the chunk is durable.

A line is the commit point of a chunk: a file the manifest does not list is not part of the
archive (the archiver deletes such files on start and writes them again from the same offsets).
Each line holds at least ``file`` (relative to the archive root), which is all the monitor needs.

Two kinds of line (``kind``; lines written before kinds existed are chunks):

- ``chunk``: the file holds the records of ``first_offset..last_offset``; ``first_read_offset`` /
  ``last_read_offset`` are the offsets of the first and last record actually read (offsets Kafka
  skips, such as transaction markers, are covered but not read);
- ``gap``: the offsets ``first_missing..last_missing`` (also ``first_offset..last_offset``) were
  gone from the broker before they were archived, ``reason`` says why (``retention``). Its file is
  an empty gzip chunk, so every line still names a file and readers that only follow ``file`` see
  no line for the gap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sinks.archive.exceptions import ManifestError

__all__ = [
    "CHUNK",
    "GAP",
    "MANIFEST_NAME",
    "ManifestEntry",
    "append_entry",
    "fsync_dir",
    "read_manifest",
    "recover_manifest",
]

MANIFEST_NAME = "manifest.jsonl"
CHUNK = "chunk"
GAP = "gap"


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
    kind: str = CHUNK  # CHUNK or GAP
    first_read_offset: int | None = None  # chunk: first offset actually read (None: older manifest)
    last_read_offset: int | None = None  # chunk: last offset actually read
    reason: str | None = None  # gap: why the offsets are missing ("retention")

    @property
    def is_gap(self) -> bool:
        return self.kind == GAP

    def to_json(self) -> bytes:
        extra: dict[str, Any]
        if self.is_gap:
            extra = {
                "first_missing": self.first_offset,
                "last_missing": self.last_offset,
                "reason": self.reason,
            }
        else:
            extra = {"first_read_offset": self.first_read_offset, "last_read_offset": self.last_read_offset}
        return orjson.dumps(
            {
                "kind": self.kind,
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
                **extra,
            }
        )

    @classmethod
    def from_obj(cls, obj: Any) -> ManifestEntry:
        """Validate one decoded line; raise ``ValueError`` naming what is wrong."""
        if not isinstance(obj, dict):
            raise ValueError("entry is not a JSON object")
        kind = obj.get("kind", CHUNK)
        if kind not in (CHUNK, GAP):
            raise ValueError(f"unknown kind {kind!r}")

        def need(key: str, kind: type | tuple[type, ...]) -> Any:
            value = obj.get(key)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{key!r} missing or not {getattr(kind, '__name__', kind)}")
            return value

        def optional_int(key: str) -> int | None:
            value = obj.get(key)
            if value is None:
                return None
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{key!r} not int")
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
            kind=kind,
            first_read_offset=None if kind == GAP else optional_int("first_read_offset"),
            last_read_offset=None if kind == GAP else optional_int("last_read_offset"),
            reason=need("reason", str) if kind == GAP else None,
        )
        if entry.partition < 0 or entry.first_offset < 0 or entry.last_offset < entry.first_offset:
            raise ValueError(
                f"bad bounds: partition {entry.partition}, {entry.first_offset}..{entry.last_offset}"
            )
        if kind == GAP:
            missing = (need("first_missing", int), need("last_missing", int))
            if missing != (entry.first_offset, entry.last_offset):
                raise ValueError(
                    f"gap {missing[0]}..{missing[1]} differs from its offsets "
                    f"{entry.first_offset}..{entry.last_offset}"
                )
            if entry.records or entry.lines:
                raise ValueError("a gap holds no record")
        elif entry.first_read_offset is not None or entry.last_read_offset is not None:
            read = (entry.first_read_offset, entry.last_read_offset)
            if (
                read[0] is None
                or read[1] is None
                or not entry.first_offset <= read[0] <= read[1] <= entry.last_offset
            ):
                raise ValueError(
                    f"read offsets {read[0]}..{read[1]} not within {entry.first_offset}..{entry.last_offset}"
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
