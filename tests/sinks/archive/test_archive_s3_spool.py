"""CT_ARCHIVE_S3_SPOOL_BYTES: how much of an open chunk (per partition) an archive on object
storage holds in memory before it spills to a temp file; against a real S3 server (S3Proxy)."""

from __future__ import annotations

import os

import orjson
import pytest
from pydantic import ValidationError

from sinks.archive.reader import open_reader
from sinks.archive.settings import ArchiveS3Settings
from sinks.archive.storage import open_storage
from sinks.archive.store import ArchiveStore
from sinks.archive.verify import verify_archive

SPOOL = 64 << 10


def _lines(offset: int) -> list[tuple[bytes, float]]:
    # Random text does not compress: a few records take the gzip stream past the spool size.
    body = orjson.dumps({"eventId": f"e-{offset}", "hubId": "h", "pad": os.urandom(12_000).hex()})
    return [(body, 1.7e12)]


def test_a_chunk_over_the_spool_size_spills_to_disk_and_round_trips(
    s3_archive: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ArchiveS3Settings(spool_bytes=SPOOL)
    written: list[bytes] = []
    with ArchiveStore(s3_archive, chunk_records=100, storage=open_storage(s3_archive, settings)) as store:
        for offset in range(2):
            lines = _lines(offset)
            written += [line for line, _ in lines]
            store.add("t", 0, offset, 1.7e12, lines)
        small = store._open[("t", 0)].upload.handle
        assert not small._rolled  # type: ignore[attr-defined]  # CPython's SpooledTemporaryFile flag
        for offset in range(2, 10):
            lines = _lines(offset)
            written += [line for line, _ in lines]
            store.add("t", 0, offset, 1.7e12, lines)
        assert small._rolled  # type: ignore[attr-defined]
        (entry,) = store.flush_all()
    assert entry.size > SPOOL
    # Readers spool a chunk the same way (CT_ARCHIVE_S3_SPOOL_BYTES from the environment).
    monkeypatch.setenv("CT_ARCHIVE_S3_SPOOL_BYTES", str(SPOOL))
    assert [r.line for r in open_reader(s3_archive).records("t")] == written
    assert verify_archive(s3_archive).ok


@pytest.mark.parametrize("value", [0, (64 << 10) - 1, (1 << 30) + 1])
def test_spool_bytes_is_bounded(value: int) -> None:
    with pytest.raises(ValidationError, match="spool_bytes"):
        ArchiveS3Settings(spool_bytes=value)
    assert ArchiveS3Settings().spool_bytes == 8 << 20
