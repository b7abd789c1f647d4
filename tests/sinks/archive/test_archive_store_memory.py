"""The archive store's memory does not grow with the chunks it closes: a long-running archiver
keeps one position per partition, not one manifest entry per chunk."""

from __future__ import annotations

from pathlib import Path

import orjson

from sinks.archive.manifest import MANIFEST_NAME, read_manifest
from sinks.archive.store import ArchiveStore
from tests.helpers.archive_data import event


def _state_size(store: ArchiveStore) -> int:
    """Items held in the store's containers (lists, dicts, sets), whatever their names."""
    return sum(len(value) for value in vars(store).values() if isinstance(value, list | dict | set | tuple))


def _archive(store: ArchiveStore, offsets: range) -> int:
    closed = 0
    for partition in (0, 1):
        for offset in offsets:
            line = orjson.dumps(event(offset))
            closed += len(store.add("t", partition, offset, 0.0, [(line, 1714557600000.0)]))
    return closed


def test_state_does_not_grow_with_chunks_closed(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=2) as store:
        assert _archive(store, range(0, 40)) == 40
        after_few = _state_size(store)
        assert _archive(store, range(40, 400)) == 360
        assert _state_size(store) == after_few
        assert store.positions == {("t", 0): 399, ("t", 1): 399}
    assert len(read_manifest(tmp_path / MANIFEST_NAME).entries) == 400


def test_reopened_store_holds_positions_only(tmp_path: Path) -> None:
    with ArchiveStore(tmp_path, chunk_records=2) as store:
        _archive(store, range(0, 200))
    with ArchiveStore(tmp_path, chunk_records=2) as reopened:
        assert (reopened.next_offset("t", 0), reopened.next_offset("t", 1)) == (200, 200)
        assert _state_size(reopened) == 2  # the two positions
        # Re-deliveries of archived offsets are still refused, from the positions alone.
        assert _archive(reopened, range(190, 200)) == 0 and reopened.open_chunks() == []
