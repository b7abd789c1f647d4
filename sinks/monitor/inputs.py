"""Line sources for the monitor: stdin, a file (plain or gzip) or an archive directory.

Every source yields raw ``bytes`` lines (without their ``\\n``) so decoding happens once, in
orjson. Streams are read in chunks of :data:`CHUNK_BYTES` and a line is held only up to
``max_line_bytes``: a longer one is dropped as it streams past, counted in :class:`Skips`,
so memory stays bounded whatever the input.

In an archive directory, manifest lines that cannot be archive entries (not JSON, not an
object, no usable ``file`` name, too long or too deep) and files whose gzip data is corrupt
are skipped with a note in :class:`Skips`; a well-formed entry naming a file the archive
lacks (missing, or outside the directory) is an :class:`InputError`.

An archive on object storage (``s3://bucket/prefix``, sinks/archive/storage.py) is read the same
way through its storage: its manifest is one object per entry, read in (topic, partition,
offset) order; an entry object that is not one of ours (foreign, or not a JSON entry) and a chunk
that does not decompress are skipped with a note, as in a directory.
"""

from __future__ import annotations

import errno
import gzip
import io
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson

from contest_telemetry.exceptions import ConfigError, ContestTelemetryError
from sinks.archive.manifest_log import is_entry_key
from sinks.archive.storage import MANIFEST_PREFIX, MARKER_KEY, Storage, StorageError, is_url, open_storage
from sinks.monitor.summary import MAX_DEPTH, is_depth_error

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_MAX_LINE_BYTES",
    "MANIFEST_MAX_LINE_BYTES",
    "MANIFEST_NAME",
    "InputError",
    "Skips",
    "archive_files",
    "iter_lines",
    "open_lines",
    "storage_archive_keys",
]

MANIFEST_NAME = "manifest.jsonl"
DEFAULT_MAX_LINE_BYTES = 1 << 20
# A manifest entry is a few hundred bytes; anything this long is not one.
MANIFEST_MAX_LINE_BYTES = 64 << 10
CHUNK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_CORRUPT = (EOFError, zlib.error, gzip.BadGzipFile)


class InputError(ContestTelemetryError):
    """The input cannot be read: a missing path, a manifest entry naming a missing file, a corrupt file."""


class Skips:
    """What the readers left out, for the notes the monitor prints on stderr after its output.

    ``long_lines`` counts lines longer than ``max_line_bytes``; ``notes`` holds the first
    ``max_notes`` reasons for skipped manifest lines and files, ``more_notes`` counts the rest.
    """

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, max_notes: int = 10) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self.max_line_bytes = max_line_bytes
        self.long_lines = 0
        self.notes: list[str] = []
        self.more_notes = 0
        self._max_notes = max_notes

    def note(self, message: str) -> None:
        if len(self.notes) < self._max_notes:
            self.notes.append(message)
        else:
            self.more_notes += 1

    def report(self) -> list[str]:
        """The notes to print, one line each (without the ``monitor:`` prefix)."""
        lines = list(self.notes)
        if self.more_notes:
            lines.append(f"and {self.more_notes} more skipped manifest lines or files")
        if self.long_lines:
            plural = "line" if self.long_lines == 1 else "lines"
            lines.append(
                f"skipped {self.long_lines} {plural} longer than {self.max_line_bytes} bytes (--max-line-bytes)"
            )
        return lines


def _maybe_gunzip(stream: BinaryIO) -> BinaryIO:
    # Sniff the magic bytes rather than trust a suffix: archives may be renamed, and
    # `zcat`-less pipes (`cat x.ndjson.gz | monitor`) should work too.
    reader = (
        stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(cast(Any, stream), CHUNK_BYTES)
    )
    if reader.peek(2)[:2] == _GZIP_MAGIC:
        return cast(BinaryIO, gzip.GzipFile(fileobj=reader, mode="rb"))
    return reader


def _split_lines(stream: BinaryIO, limit: int) -> Iterator[bytes | None]:
    """The lines of ``stream`` without their ``\\n``; ``None`` stands for a line over ``limit`` bytes.

    Reads ``CHUNK_BYTES`` at a time; a line that spans chunks is kept in pieces only while
    it fits the limit, and dropped piece by piece once it does not. Time is linear in the
    input and memory about two chunks plus twice the limit.
    """
    read = stream.read
    head: list[bytes] = []  # the start of a line that began in an earlier chunk
    size = 0
    over = False  # that line is already over the limit: drop it up to its newline
    while True:
        chunk = read(CHUNK_BYTES)
        if not chunk:
            break
        parts = chunk.split(b"\n")
        tail = parts.pop()  # no newline after it (yet): it starts the pending line
        if parts:
            # parts[0] ends the pending line.
            first = parts[0]
            if over:
                over = False
                yield None
            elif size + len(first) > limit:
                yield None
            elif head:
                head.append(first)
                yield b"".join(head)
            else:
                yield first
            head.clear()
            size = 0
            if len(parts) > 1:
                if max(map(len, parts)) <= limit:
                    yield from parts[1:]
                else:
                    for line in parts[1:]:
                        yield line if len(line) <= limit else None
        if over or not tail:
            continue
        if size + len(tail) > limit:
            over = True
            head.clear()
            size = 0
        else:
            head.append(tail)
            size += len(tail)
    if over:
        yield None
    elif head:
        yield b"".join(head)


def iter_lines(stream: BinaryIO, skips: Skips | None = None) -> Iterator[bytes]:
    """The lines of one stream, gunzipped if it is gzip; lines over the limit are counted in ``skips``."""
    skips = skips if skips is not None else Skips()
    for line in _split_lines(_maybe_gunzip(stream), skips.max_line_bytes):
        if line is None:
            skips.long_lines += 1
        else:
            yield line


def _file_lines(path: Path, skips: Skips, in_archive: bool = False) -> Iterator[bytes]:
    try:
        with path.open("rb", buffering=CHUNK_BYTES) as handle:
            yield from iter_lines(handle, skips)
    except _CORRUPT as error:
        # One damaged file of an archive should not hide the others; a file given on its
        # own is the whole input, so its damage is an error.
        if not in_archive:
            raise InputError(f"cannot read {path}: {error}") from error
        skips.note(f"{path}: corrupt, the rest of the file is skipped ({error})")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error}") from error


def _entry_name(line: bytes | None, topics: list[str] | None) -> tuple[str | None, str | None]:
    """``(file, None)`` for an entry to read, ``(None, reason)`` for a line to skip, ``(None, None)``
    for an entry of a topic not asked for."""
    if line is None:
        return None, f"longer than {MANIFEST_MAX_LINE_BYTES} bytes"
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        return None, f"nested deeper than {MAX_DEPTH} levels" if is_depth_error(error) else "not JSON"
    if not isinstance(entry, dict):
        return None, "entry is not a JSON object"
    # An archive holds several topics (events and finished-contest records); reading
    # both would count each contest twice, so callers pick the topics to read.
    if topics and entry.get("topic") not in topics:
        return None, None
    name = entry.get("file")
    if not isinstance(name, str) or not name:
        return None, "entry has no 'file'"
    if "\x00" in name:
        return None, "'file' contains a NUL byte"
    return name, None


def archive_files(directory: Path, topics: list[str] | None = None, skips: Skips | None = None) -> list[Path]:
    """The files of an archive directory, in reading order.

    With a ``manifest.jsonl`` the files it lists, in its order (each line an object
    with ``file`` relative to the directory); otherwise every ``*.ndjson`` and
    ``*.ndjson.gz`` below it, sorted by path. Lines that cannot be entries are skipped
    with a note in ``skips``; every file an entry names must exist, checked up front so
    a broken archive fails before any output.
    """
    skips = skips if skips is not None else Skips()
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        found = [*directory.rglob("*.ndjson"), *directory.rglob("*.ndjson.gz")]
        return sorted(path for path in found if path.is_file())
    root = directory.resolve()
    files: list[Path] = []
    with manifest.open("rb") as handle:
        for number, line in enumerate(_split_lines(handle, MANIFEST_MAX_LINE_BYTES), start=1):
            if line is not None and (not line or line.isspace()):
                continue
            name, reason = _entry_name(line, topics)
            if name is not None:
                try:
                    path = (directory / name).resolve()
                    exists = path.is_file()
                except OSError as error:
                    if error.errno != errno.ENAMETOOLONG:
                        raise
                    reason = f"'file' is not a usable file name ({error.strerror})"
                except RuntimeError as error:  # Path.resolve() on a symlink loop
                    raise InputError(f"{manifest}:{number}: cannot resolve {name!r}: {error}") from error
                else:
                    # The manifest names files of this archive; refuse paths that leave it.
                    if not path.is_relative_to(root):
                        raise InputError(f"{manifest}:{number}: {name!r} is outside the archive")
                    if not exists:
                        raise InputError(f"{manifest}:{number}: listed file not found: {path}")
                    files.append(path)
            if reason is not None:
                skips.note(f"{manifest}:{number}: skipped: {reason}")
    return files


def _entry_order(key: str) -> tuple[str, int, str]:
    # _manifest/<topic>/partition=<P>/<first>-<last>.json: partitions in numeric order.
    parts = key.split("/")
    if len(parts) == 4 and parts[2].startswith("partition=") and parts[2][10:].isdigit():
        return parts[1], int(parts[2][10:]), parts[3]
    return key, -1, ""


def storage_archive_keys(
    storage: Storage, topics: list[str] | None = None, skips: Skips | None = None
) -> list[str]:
    """The chunk keys of an archive on object storage, in reading order (see :func:`archive_files`)."""
    skips = skips if skips is not None else Skips()
    keys = [info.key for info in storage.list_objects()]
    if MARKER_KEY not in keys:
        found = [
            key
            for key in keys
            if not key.startswith(MANIFEST_PREFIX) and key.endswith((".ndjson", ".ndjson.gz"))
        ]
        return sorted(found)
    wanted: list[str] = []
    for key in keys:
        if not key.startswith(MANIFEST_PREFIX) or key == MARKER_KEY:
            continue
        if not is_entry_key(key):
            skips.note(f"{storage.describe(key)}: skipped: not a manifest entry object (foreign)")
            continue
        wanted.append(key)
    wanted.sort(key=_entry_order)
    files: list[str] = []
    for key, data in storage.read_many(wanted):
        where = storage.describe(key)
        if isinstance(data, Exception):
            skips.note(f"{where}: skipped: cannot be read ({data})")
            continue
        line = data.rstrip(b"\n")
        name, reason = _entry_name(None if len(line) > MANIFEST_MAX_LINE_BYTES else line, topics)
        if name is not None:
            chunk = storage.normalize(name)
            if chunk is None:
                raise InputError(f"{where}: {name!r} is outside the archive")
            if not storage.exists(chunk):
                raise InputError(f"{where}: listed file not found: {storage.describe(chunk)}")
            files.append(chunk)
        if reason is not None:
            skips.note(f"{where}: skipped: {reason}")
    return files


def _object_lines(storage: Storage, key: str, skips: Skips) -> Iterator[bytes]:
    try:
        with storage.open(key) as handle:
            yield from iter_lines(handle, skips)
    except _CORRUPT as error:
        skips.note(f"{storage.describe(key)}: corrupt, the rest of the file is skipped ({error})")
    except (OSError, ContestTelemetryError) as error:
        raise InputError(f"cannot read {storage.describe(key)}: {error}") from error


def open_lines(
    source: str | None,
    stdin: BinaryIO | None = None,
    topics: list[str] | None = None,
    skips: Skips | None = None,
) -> Iterator[bytes]:
    """Lines from ``source``: None or ``-`` for stdin, else a file or an archive directory.

    Path errors are raised here, before the first line, so the caller can report
    them without having printed anything. What is skipped is recorded in ``skips``.
    """
    skips = skips if skips is not None else Skips()
    if source is None or source == "-":
        return iter_lines(stdin if stdin is not None else sys.stdin.buffer, skips)
    if is_url(source):
        try:
            storage = open_storage(source)
            keys = storage_archive_keys(storage, topics, skips)
        except (ConfigError, StorageError) as error:
            raise InputError(str(error)) from None
        return (line for key in keys for line in _object_lines(storage, key, skips))
    path = Path(source).absolute()
    if path.is_dir():
        files = archive_files(path, topics, skips)
        return (line for file in files for line in _file_lines(file, skips, in_archive=True))
    if not path.exists():
        raise InputError(f"Input file not found: {path}")
    if topics:
        raise InputError("--topic applies to an archive directory, not to a file")
    return _file_lines(path, skips)
