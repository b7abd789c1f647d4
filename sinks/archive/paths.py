"""File names of the archive: only numbers and sanitised topic names ever reach a path.

Layout (``P`` partition, offsets zero-padded to 20 digits)::

    <root>/<topic>/date=YYYY-MM-DD/partition=P/<topic>-p<P>-<first>-<last>.ndjson.gz
    <root>/manifest.jsonl

Ids inside events (hubId, contestId, ...) are never used for paths. The topic comes from settings
and is sanitised all the same: a name made only of ``[A-Za-z0-9._-]`` (1-100 characters, not
starting with ``.`` or ``_``) is kept; anything else becomes ``_<safe prefix>-<sha256[:16]>`` so two
different names never share a directory and no name can climb out of the root.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = [
    "DATA_SUFFIX",
    "TMP_SUFFIX",
    "ChunkName",
    "chunk_relpath",
    "date_component",
    "parse_chunk_name",
    "safe_component",
]

DATA_SUFFIX = ".ndjson.gz"
TMP_SUFFIX = ".tmp"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_CHUNK = re.compile(
    r"(?P<topic>[A-Za-z0-9_][A-Za-z0-9._-]*)-p(?P<partition>\d{1,10})-(?P<first>\d{20})-(?P<last>\d{20})\.ndjson\.gz"
)
_MIN_MS = 0.0
_MAX_MS = 253402300799999.0  # 9999-12-31T23:59:59.999Z


def safe_component(name: str) -> str:
    """``name`` as one path component that is safe, bounded (<= 100 chars) and injective."""
    if _SAFE.fullmatch(name) and ".." not in name:
        return name
    prefix = _UNSAFE_CHARS.sub("_", name)[:40].strip("._-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"_{prefix}-{digest}" if prefix else f"_{digest}"


def date_component(ms: float | None) -> str:
    """``YYYY-MM-DD`` (UTC) of epoch milliseconds; out-of-range or missing times give 1970-01-01."""
    if ms is None or not (_MIN_MS <= ms <= _MAX_MS):
        ms = 0.0
    moment = datetime.fromtimestamp(ms / 1000.0, UTC)
    return f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"


@dataclass(frozen=True, slots=True)
class ChunkName:
    topic: str  # the sanitised topic component
    partition: int
    first: int
    last: int


def chunk_relpath(topic: str, partition: int, first: int, last: int, min_event_ms: float | None) -> str:
    """The path of a chunk relative to the archive root (POSIX separators)."""
    if partition < 0 or first < 0 or last < first:
        raise ValueError(f"bad chunk bounds: partition {partition}, offsets {first}..{last}")
    safe = safe_component(topic)
    name = f"{safe}-p{partition}-{first:020d}-{last:020d}{DATA_SUFFIX}"
    return f"{safe}/date={date_component(min_event_ms)}/partition={partition}/{name}"


def parse_chunk_name(name: str) -> ChunkName | None:
    """The parts of a chunk's file name, or None when it is not one of ours."""
    match = _CHUNK.fullmatch(name)
    if match is None:
        return None
    return ChunkName(match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]))
