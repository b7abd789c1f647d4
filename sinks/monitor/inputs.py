"""Line sources for the monitor: stdin, a file (plain or gzip) or an archive directory.

Every source yields raw ``bytes`` lines so decoding happens once, in orjson, and a
file is read in buffered chunks: nothing here holds more than one line at a time.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from contest_telemetry.exceptions import ContestTelemetryError

__all__ = ["MANIFEST_NAME", "InputError", "archive_files", "iter_lines", "open_lines"]

MANIFEST_NAME = "manifest.jsonl"
_GZIP_MAGIC = b"\x1f\x8b"
_BUFFER = 1 << 20


class InputError(ContestTelemetryError):
    """The input cannot be read: a missing path, a broken manifest, a corrupt file."""


def _maybe_gunzip(stream: BinaryIO) -> BinaryIO:
    # Sniff the magic bytes rather than trust a suffix: archives may be renamed, and
    # `zcat`-less pipes (`cat x.ndjson.gz | monitor`) should work too.
    reader = (
        stream if isinstance(stream, io.BufferedReader) else io.BufferedReader(cast(Any, stream), _BUFFER)
    )
    if reader.peek(2)[:2] == _GZIP_MAGIC:
        return cast(BinaryIO, io.BufferedReader(cast(Any, gzip.GzipFile(fileobj=reader, mode="rb")), _BUFFER))
    return reader


def iter_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of one stream, gunzipped if it is gzip; line ends are left to the decoder."""
    yield from _maybe_gunzip(stream)


def _file_lines(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb", buffering=_BUFFER) as handle:
            yield from iter_lines(handle)
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"cannot read {path}: {error}") from error


def archive_files(directory: Path, topics: list[str] | None = None) -> list[Path]:
    """The files of an archive directory, in reading order.

    With a ``manifest.jsonl`` the files it lists, in its order (each line an object
    with ``file`` relative to the directory); otherwise every ``*.ndjson`` and
    ``*.ndjson.gz`` below it, sorted by path. Every listed file must exist, checked
    up front so a broken archive fails before any output.
    """
    manifest = directory / MANIFEST_NAME
    if not manifest.is_file():
        found = [*directory.rglob("*.ndjson"), *directory.rglob("*.ndjson.gz")]
        return sorted(path for path in found if path.is_file())
    root = directory.resolve()
    files: list[Path] = []
    with manifest.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as error:
                raise InputError(f"{manifest}:{number}: not JSON ({error})") from error
            name = entry.get("file") if isinstance(entry, dict) else None
            # An archive holds several topics (events and finished-contest records); reading
            # both would count each contest twice, so callers pick the topics to read.
            if topics and isinstance(entry, dict) and entry.get("topic") not in topics:
                continue
            if not isinstance(name, str) or not name:
                raise InputError(f"{manifest}:{number}: entry has no 'file'")
            path = (directory / name).resolve()
            # The manifest names files of this archive; refuse paths that leave it.
            if not path.is_relative_to(root):
                raise InputError(f"{manifest}:{number}: {name!r} is outside the archive")
            if not path.is_file():
                raise InputError(f"{manifest}:{number}: listed file not found: {path}")
            files.append(path)
    return files


def open_lines(
    source: str | None, stdin: BinaryIO | None = None, topics: list[str] | None = None
) -> Iterator[bytes]:
    """Lines from ``source``: None or ``-`` for stdin, else a file or an archive directory.

    Path errors are raised here, before the first line, so the caller can report
    them without having printed anything.
    """
    if source is None or source == "-":
        return iter_lines(stdin if stdin is not None else sys.stdin.buffer)
    path = Path(source).absolute()
    if path.is_dir():
        files = archive_files(path, topics)
        return (line for file in files for line in _file_lines(file))
    if not path.exists():
        raise InputError(f"Input file not found: {path}")
    if topics:
        raise InputError("--topic applies to an archive directory, not to a file")
    return _file_lines(path)
