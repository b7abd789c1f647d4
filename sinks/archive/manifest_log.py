"""The manifest of an archive on either storage: what is archived, and how an entry is added.

- :class:`JsonlManifest` (a directory): ``manifest.jsonl``, one line appended and fsynced per
  chunk; a torn last line is cut off on recovery (sinks/archive/manifest.py).
- :class:`ObjectManifest` (S3): object stores cannot append, so each entry is its own small
  object, ``_manifest/<topic>/partition=<P>/<first>-<last>.json`` (20-digit offsets), holding the
  same JSON as a manifest line, PUT after the chunk it lists. A PUT is atomic: there is no torn
  entry. ``_manifest/archive.json`` marks the prefix as an archive. Entries are returned in
  (topic, partition, first offset) order, the order a reader wants.

Both are read with :meth:`scan`, which never raises for what it finds: unreadable entries come
back as ``problems`` (where, detail) for ``archive verify`` and the monitor to report.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from sinks.archive.exceptions import ArchiveError, ManifestError
from sinks.archive.manifest import (
    MANIFEST_NAME,
    ManifestEntry,
    append_entry,
    fsync_dir,
    read_manifest,
    recover_manifest,
)
from sinks.archive.paths import safe_component
from sinks.archive.storage import MANIFEST_PREFIX, MARKER_KEY, LocalStorage, Storage

__all__ = [
    "JsonlManifest",
    "ManifestLog",
    "ManifestScan",
    "ObjectManifest",
    "entry_key",
    "is_entry_key",
    "is_manifest_key",
    "manifest_for",
]

_ENTRY_KEY = re.compile(r"_manifest/[A-Za-z0-9_][A-Za-z0-9._-]*/partition=\d{1,10}/\d{20}-\d{20}\.json")
_MAX_ENTRY_BYTES = 64 << 10  # an entry is a few hundred bytes


@dataclass
class ManifestScan:
    entries: list[ManifestEntry] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, where, detail)
    found: bool = True  # False: the root holds no manifest at all
    raw: list[tuple[str, bytes]] = field(default_factory=list)  # S3: (key, bytes) of every entry object


class ManifestLog(Protocol):
    name: str  # for messages

    def exists(self) -> bool: ...

    def create(self) -> None: ...

    def scan(self) -> ManifestScan: ...

    def recover(self) -> list[ManifestEntry]: ...

    def append(self, entry: ManifestEntry) -> None: ...

    def close(self) -> None: ...


def entry_key(entry: ManifestEntry) -> str:
    """The object key of an entry (S3); sorted keys keep a partition's entries in offset order."""
    return (
        f"{MANIFEST_PREFIX}{safe_component(entry.topic)}/partition={entry.partition}/"
        f"{entry.first_offset:020d}-{entry.last_offset:020d}.json"
    )


def is_entry_key(key: str) -> bool:
    """The key has the shape of an entry object (S3)."""
    return _ENTRY_KEY.fullmatch(key) is not None


def is_manifest_key(key: str) -> bool:
    return key == MANIFEST_NAME or key.startswith(MANIFEST_PREFIX)


class JsonlManifest:
    """``manifest.jsonl`` of an archive directory."""

    def __init__(self, storage: LocalStorage) -> None:
        self.storage = storage
        self.path = storage.root / MANIFEST_NAME
        self.name = MANIFEST_NAME
        self._fd: int | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def create(self) -> None:
        self.path.touch()
        fsync_dir(self.path.parent)

    def scan(self) -> ManifestScan:
        if not self.path.is_file():
            return ManifestScan(
                problems=[("manifest", MANIFEST_NAME, "manifest.jsonl not found")], found=False
            )
        read = read_manifest(self.path)
        scan = ManifestScan(read.entries)
        for number, reason in read.errors:
            scan.problems.append(("manifest", MANIFEST_NAME, f"line {number}: {reason}"))
        if read.torn:
            scan.problems.append(("manifest", MANIFEST_NAME, f"torn last line ({len(read.torn)} bytes)"))
        return scan

    def recover(self) -> list[ManifestEntry]:
        entries = recover_manifest(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return entries

    def append(self, entry: ManifestEntry) -> None:
        if self._fd is None:
            raise ArchiveError("archive store is not open")
        append_entry(self._fd, entry)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ObjectManifest:
    """One object per entry under ``_manifest/`` of an archive on object storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.name = MANIFEST_PREFIX
        self._open = False

    def exists(self) -> bool:
        return self.storage.exists(MARKER_KEY)

    def create(self) -> None:
        self.storage.put(
            MARKER_KEY, orjson.dumps({"format": "contest-telemetry-archive", "version": 1}) + b"\n"
        )

    def scan(self, keys: list[str] | None = None) -> ManifestScan:
        """Read every entry object (``keys``: the listing's ``_manifest/`` keys, when already listed)."""
        if keys is None:
            keys = [info.key for info in self.storage.list_objects() if info.key.startswith(MANIFEST_PREFIX)]
        scan = ManifestScan(found=MARKER_KEY in keys)
        if not scan.found:
            scan.problems.append(("manifest", MARKER_KEY, "not found: the prefix holds no archive marker"))
        wanted: list[str] = []
        for key in keys:
            if key == MARKER_KEY:
                continue
            if not is_entry_key(key):
                scan.problems.append(("foreign", key, "not a manifest entry object of this archive"))
            else:
                wanted.append(key)
        for key, data in self.storage.read_many(wanted):
            if isinstance(data, Exception):
                scan.problems.append(("manifest", key, f"cannot be read: {data}"))
                continue
            scan.raw.append((key, data))
            try:
                if len(data) > _MAX_ENTRY_BYTES:
                    raise ValueError(f"{len(data)} bytes, too long for an entry")
                entry = ManifestEntry.from_obj(orjson.loads(data))
            except (ValueError, orjson.JSONDecodeError) as error:
                scan.problems.append(("manifest", key, f"not a valid entry: {error}"))
                continue
            if entry_key(entry) != key:
                scan.problems.append(
                    ("manifest", key, f"names another entry than its key ({entry_key(entry)})")
                )
                continue
            scan.entries.append(entry)
        scan.entries.sort(key=lambda e: (e.topic, e.partition, e.first_offset, e.last_offset))
        return scan

    def recover(self) -> list[ManifestEntry]:
        scan = self.scan()
        # Foreign objects are verify's business; a broken entry object of ours stops the archiver,
        # as a broken manifest line does.
        broken = [(where, detail) for kind, where, detail in scan.problems if kind == "manifest"]
        broken = [(where, detail) for where, detail in broken if where != MARKER_KEY]
        if broken:
            where, detail = broken[0]
            raise ManifestError(f"{self.storage.describe(where)}: {detail} (run `archive verify`)")
        self._open = True
        return scan.entries

    def append(self, entry: ManifestEntry) -> None:
        if not self._open:
            raise ArchiveError("archive store is not open")
        self.storage.put(entry_key(entry), entry.to_json() + b"\n")

    def close(self) -> None:
        self._open = False


def manifest_for(storage: Storage) -> ManifestLog:
    if isinstance(storage, LocalStorage):
        return JsonlManifest(storage)
    return ObjectManifest(storage)
