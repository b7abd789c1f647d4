"""``archive verify``: is every file what the manifest says, and do the offsets line up?

Problem kinds (stable, for ``--json``):

- ``manifest``: a manifest line that is not a valid entry (``torn`` when it is the last line);
- ``bad-entry``: an entry whose file lies outside the archive or is not a chunk name;
- ``name``: the file name's partition/offsets differ from the entry's;
- ``missing``: a listed file is not on disk;
- ``duplicate-entry``: two entries name the same file;
- ``sha256`` / ``size``: the file's bytes differ from what was archived;
- ``gzip``: the file does not decompress to the end (truncated, corrupt);
- ``count``: the number of lines differs from the entry's;
- ``json``: a line of the file is not a JSON object;
- ``gap`` / ``overlap``: consecutive chunks of a partition do not continue at last + 1 (offsets
  that no manifest line accounts for, or that two lines claim);
- ``recorded-gap``: offsets the archiver recorded as lost before it could read them (a ``gap``
  line of the manifest, with its reason, e.g. ``retention``). Every recorded gap is also listed in
  ``gaps``; ``allow_gaps`` (``--allow-gaps``) accepts them, so they are then not problems;
- ``unlisted``: a chunk file on disk the manifest does not list;
- ``foreign``: an object under the archive root that is neither a chunk, the manifest nor a
  manifest entry object (something else was written under the prefix or into the directory;
  dot-files of a directory, such as ``.lock``, are the archiver's and not reported).

The archive is a directory or an ``s3://bucket/prefix`` URL (sinks/archive/storage.py); on object
storage the manifest is one object per entry (sinks/archive/manifest_log.py) and a broken one is
a ``manifest`` problem naming its key.

Files are read in blocks and split into lines in one pass: time and memory are linear in the
size of the data, whatever the length of a line.

Names and texts in a problem or gap come from the manifest, which anyone who can write to the
archive controls: their control characters (C0, DEL, C1, line separators and bidi overrides) are
escaped (``\\x00``, ``\\u202e``) when the problem is made, so neither the table nor a terminal
showing the JSON prints them raw.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import posixpath
import re
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson

from sinks.archive.manifest import ManifestEntry
from sinks.archive.manifest_log import ObjectManifest, is_manifest_key, manifest_for
from sinks.archive.paths import parse_chunk_name
from sinks.archive.storage import MANIFEST_PREFIX, Storage, open_storage

__all__ = ["Gap", "Problem", "VerifyReport", "printable", "verify_archive"]

_READ = 1 << 20
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028-\u202e\u2066-\u2069]")


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with its control characters escaped (``\\x00``, ``\\u202e``); other text as is."""
    return _CONTROL.sub(_escape_control, text)


def _printable_fields(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, str) and _CONTROL.search(value):
            object.__setattr__(obj, name, printable(value))


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str
    file: str | None
    topic: str | None
    partition: int | None
    detail: str

    def __post_init__(self) -> None:
        _printable_fields(self, ("file", "topic", "detail"))


@dataclass(frozen=True, slots=True)
class Gap:
    """Offsets a ``gap`` line of the manifest records as lost before they were archived."""

    topic: str
    partition: int
    first_missing: int
    last_missing: int
    reason: str
    file: str

    def __post_init__(self) -> None:
        _printable_fields(self, ("topic", "reason", "file"))

    @property
    def missing(self) -> int:
        return self.last_missing - self.first_missing + 1


@dataclass
class VerifyReport:
    root: str
    files: int = 0
    lines: int = 0
    problems: list[Problem] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)  # recorded gaps (problems unless allowed)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "root": self.root,
            "files": self.files,
            "lines": self.lines,
            "problems": [asdict(problem) for problem in self.problems],
            "gaps": [asdict(gap) for gap in self.gaps],
        }


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _lines(stream: _Readable) -> Iterator[tuple[bytes, bool]]:
    """``(line without its newline, True)`` for each line of a stream, then ``(rest, False)`` when
    the stream does not end with a newline.

    Linear: each block is searched once from where the last newline was found, and the pieces of
    a line longer than a block are joined once, when its newline arrives (never re-joined or
    re-scanned per block).
    """
    pending: list[bytes] = []
    while block := stream.read(_READ):
        start = 0
        while (end := block.find(b"\n", start)) >= 0:
            if pending:
                pending.append(block[start:end])
                yield b"".join(pending), True
                pending.clear()
            else:
                yield block[start:end], True
            start = end + 1
        if start < len(block):
            pending.append(block[start:])
    if pending:
        yield b"".join(pending), False


def _check_file(storage: Storage, key: str, entry: ManifestEntry, report: VerifyReport) -> None:
    def problem(kind: str, detail: str) -> None:
        report.problems.append(Problem(kind, entry.file, entry.topic, entry.partition, detail))

    sha = hashlib.sha256()
    size = 0
    with storage.open(key) as handle:
        while block := handle.read(_READ):
            sha.update(block)
            size += len(block)
        if size != entry.size:
            problem("size", f"{size} bytes stored, manifest says {entry.size}")
        if sha.hexdigest() != entry.sha256:
            problem("sha256", f"sha256 {sha.hexdigest()[:16]}..., manifest says {entry.sha256[:16]}...")
        handle.seek(0)
        lines = 0
        bad_json = 0
        first_bad: int | None = None
        unterminated = False
        try:
            with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
                for line, terminated in _lines(stream):
                    lines += 1
                    if not terminated:
                        unterminated = True
                        break
                    try:
                        ok = isinstance(orjson.loads(line), dict)
                    except orjson.JSONDecodeError:
                        ok = False
                    if not ok:
                        bad_json += 1
                        first_bad = first_bad or lines
        except (OSError, EOFError, zlib.error) as error:
            problem("gzip", f"does not decompress: {error}")
            return
    if unterminated:
        problem("json", f"last line {lines} has no newline (file cut short?)")
    if bad_json:
        problem("json", f"{bad_json} line(s) are not JSON objects (first: line {first_bad})")
    if lines != entry.lines:
        problem("count", f"{lines} lines, manifest says {entry.lines}")
    report.lines += lines


def verify_archive(
    directory: str | os.PathLike[str], *, allow_gaps: bool = False, storage: Storage | None = None
) -> VerifyReport:
    """Check an archive (a directory or ``s3://bucket/prefix``); never raises for what it finds,
    only for a root that cannot be read (OSError, or StorageError for object storage).

    Gaps the archiver recorded (retention deleted offsets before it read them) are listed in
    ``gaps`` and are problems unless ``allow_gaps``; offsets no line accounts for always are."""
    storage = storage if storage is not None else open_storage(directory)
    location = storage.location
    if location.path is not None:
        root_text = str(location.path.resolve())
        if not location.path.is_dir():
            raise FileNotFoundError(f"not a directory: {directory}")
    else:
        root_text = location.url
        storage.is_archive_root()
    report = VerifyReport(root_text)
    objects = {info.key: info for info in storage.list_objects()}
    manifest = manifest_for(storage)
    if isinstance(manifest, ObjectManifest):
        scan = manifest.scan([key for key in objects if key.startswith(MANIFEST_PREFIX)])
    else:
        scan = manifest.scan()
    for kind, where, detail in scan.problems:
        report.problems.append(Problem(kind, where, None, None, detail))
    listed: set[str] = set()
    by_partition: dict[tuple[str, int], list[ManifestEntry]] = defaultdict(list)
    for entry in scan.entries:
        key = storage.normalize(entry.file)
        name = parse_chunk_name(posixpath.basename(key)) if key is not None else None
        if key is None or name is None:
            report.problems.append(
                Problem(
                    "bad-entry", entry.file, entry.topic, entry.partition, "not a chunk file of this archive"
                )
            )
            continue
        if key in listed:
            report.problems.append(
                Problem("duplicate-entry", entry.file, entry.topic, entry.partition, "listed more than once")
            )
            continue
        listed.add(key)
        by_partition[(entry.topic, entry.partition)].append(entry)
        if entry.is_gap:
            gap = Gap(
                entry.topic,
                entry.partition,
                entry.first_offset,
                entry.last_offset,
                entry.reason or "",
                entry.file,
            )
            report.gaps.append(gap)
            if not allow_gaps:
                report.problems.append(
                    Problem(
                        "recorded-gap",
                        entry.file,
                        entry.topic,
                        entry.partition,
                        f"offsets {gap.first_missing}..{gap.last_missing} ({gap.missing}) were lost before "
                        f"they were archived: {gap.reason} (--allow-gaps accepts recorded gaps)",
                    )
                )
        if (name.partition, name.first, name.last) != (
            entry.partition,
            entry.first_offset,
            entry.last_offset,
        ):
            report.problems.append(
                Problem(
                    "name",
                    entry.file,
                    entry.topic,
                    entry.partition,
                    f"name says p{name.partition} {name.first}..{name.last}, manifest says "
                    f"p{entry.partition} {entry.first_offset}..{entry.last_offset}",
                )
            )
        if key not in objects and not storage.exists(key):
            report.problems.append(
                Problem("missing", entry.file, entry.topic, entry.partition, "file not found")
            )
            continue
        report.files += 1
        _check_file(storage, key, entry, report)
    for (topic, partition), entries in sorted(by_partition.items()):
        entries.sort(key=lambda e: (e.first_offset, e.last_offset))
        for previous, current in itertools.pairwise(entries):
            expected = previous.last_offset + 1
            if current.first_offset > expected:
                report.problems.append(
                    Problem(
                        "gap",
                        current.file,
                        topic,
                        partition,
                        f"offsets {expected}..{current.first_offset - 1} are in no file (after {previous.file})",
                    )
                )
            elif current.first_offset < expected:
                report.problems.append(
                    Problem(
                        "overlap",
                        current.file,
                        topic,
                        partition,
                        f"offsets {current.first_offset}..{min(previous.last_offset, current.last_offset)} "
                        f"are also in {previous.file}",
                    )
                )
    for key in objects:
        if is_manifest_key(key) or any(part.startswith(".") for part in key.split("/")):
            continue  # dot-files (.lock) are the archiver's own
        if parse_chunk_name(posixpath.basename(key)) is None:
            report.problems.append(Problem("foreign", key, None, None, "not an object of this archive"))
        elif key not in listed:
            report.problems.append(Problem("unlisted", key, None, None, "chunk file not in the manifest"))
    return report
