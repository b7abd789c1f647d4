"""Where an archive lives: a local directory or an S3 bucket prefix, behind one small interface.

``open_storage("s3://bucket/prefix")`` or ``open_storage("/some/dir")`` gives a :class:`Storage`
whose keys are POSIX paths relative to the archive root (``<topic>/date=.../x.ndjson.gz``). The
store, ``archive verify``, the monitor and replay read and write through it, so one code path
serves both; what differs is only how a chunk becomes durable and how the manifest is kept:

- local: a chunk is a temp file in ``.staging`` fsynced and renamed into place; the manifest is
  ``manifest.jsonl``, one appended line per chunk (sinks/archive/manifest.py);
- S3: a chunk is one PUT of its final, offset-based key; object stores cannot append, so the
  manifest is one small object per chunk, ``_manifest/<topic>/partition=<P>/<first>-<last>.json``
  holding the same JSON as a manifest line, PUT only after its chunk. ``_manifest/archive.json``
  marks the prefix as an archive (written when the archiver first opens it). Exactly-once comes
  from deterministic names plus this order (chunk, then its manifest object, then the Kafka
  commit) and recovery from a listing, never from conditional writes: S3Proxy, for one, accepts
  ``If-None-Match: *`` and overwrites all the same.

The S3 client is the MinIO SDK (benchmarks/s3_clients.py measured it against obstore,
aiobotocore and boto3 on S3Proxy: the fastest put and get here, and a synchronous API like the
store's). Requests that fail for a transient reason (connection refused or reset, timeout, 5xx,
throttling) are retried ``CT_ARCHIVE_S3_MAX_RETRIES`` times with doubling backoff and counted in
:attr:`S3Storage.retries`; then :class:`StorageError` stops the caller. A missing bucket, refused
credentials or an endpoint that never answers are one :class:`StorageError` line at open.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import posixpath
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, cast
from urllib.parse import urlsplit

from contest_telemetry.exceptions import ConfigError
from sinks.archive.exceptions import ArchiveError, ArchiveLockedError
from sinks.archive.manifest import fsync_dir
from sinks.archive.settings import ArchiveS3Settings

__all__ = [
    "MANIFEST_PREFIX",
    "MARKER_KEY",
    "LocalStorage",
    "Location",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "StorageError",
    "is_url",
    "open_storage",
    "parse_location",
]

MANIFEST_PREFIX = "_manifest/"
MARKER_KEY = "_manifest/archive.json"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_T = TypeVar("_T")


class StorageError(ArchiveError):
    """The archive's storage cannot be used (missing bucket, refused credentials, outage, ...)."""


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed ``--dir`` / ``CT_ARCHIVE_DIR`` / ``--input`` value."""

    url: str  # what reports show: the absolute path, or s3://bucket/prefix
    path: Path | None = None  # local
    bucket: str | None = None  # S3
    prefix: str = ""  # S3: '' or 'a/b' (no slashes at either end)

    @property
    def is_s3(self) -> bool:
        return self.bucket is not None


def is_url(text: str | os.PathLike[str]) -> bool:
    """True for ``scheme://...`` (only ``s3://`` is supported; others are refused by parse_location)."""
    return isinstance(text, str) and "://" in text


def parse_location(text: str | os.PathLike[str]) -> Location:
    """A directory path, or ``s3://bucket[/prefix]``; ConfigError naming what is wrong otherwise."""
    if not is_url(text):
        path = Path(text).absolute()
        return Location(str(path), path=path)
    raw = str(text)
    parts = urlsplit(raw)
    if parts.scheme != "s3":
        raise ConfigError(
            f"archive location {raw!r}: only s3://bucket/prefix URLs or directories are supported"
        )
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ConfigError(f"archive location {raw!r}: {bucket!r} is not a valid S3 bucket name")
    if parts.query or parts.fragment:
        raise ConfigError(f"archive location {raw!r}: no ?query or #fragment allowed")
    prefix = parts.path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ConfigError(f"archive location {raw!r}: the prefix has empty, '.' or '..' parts")
    return Location(f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}", bucket=bucket, prefix=prefix)


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # relative to the archive root, POSIX separators
    size: int


class Upload(Protocol):
    """A chunk being written: bytes go to :attr:`handle`; :meth:`seal` ends them, :meth:`commit`
    makes them durable under their final key."""

    handle: BinaryIO

    def seal(self) -> None: ...

    def commit(self, key: str) -> None: ...

    def discard(self) -> None: ...


class Storage(Protocol):
    """The operations the archive needs; keys are relative to the archive root."""

    location: Location

    def describe(self, key: str) -> str: ...

    def normalize(self, key: str) -> str | None:
        """The canonical key of ``key`` inside the archive root, None when it points outside
        (through '..', an absolute path or a link)."""
        ...

    def is_archive_root(self) -> bool:
        """The root exists (a directory, or a reachable bucket)."""
        ...

    def list_objects(self, hidden: bool = False) -> Iterator[ObjectInfo]:
        """Every object below the root, sorted by key; local dot-directories only when ``hidden``."""
        ...

    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when it does not exist."""
        ...

    def open(self, key: str) -> BinaryIO:
        """A stream of the object's bytes; FileNotFoundError when it does not exist."""
        ...

    def delete(self, key: str) -> None: ...

    def new_upload(self, name: str) -> Upload: ...

    def acquire(self) -> None:
        """Before writing: take the writer's lock where the storage has one (a directory)."""
        ...

    def release(self) -> None: ...

    def begin_writing(self) -> None:
        """After recovery: drop what a crashed writer left half-written (local temp files)."""
        ...

    def sync_deletes(self) -> None:
        """Make :meth:`delete` calls durable."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` durably (one atomic object / a renamed, fsynced file)."""
        ...

    def read_many(self, keys: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        """Small objects, read concurrently where that helps, in the order of ``keys``."""
        ...


# -- local --------------------------------------------------------------------------------------
class _LocalUpload:
    def __init__(self, storage: LocalStorage, tmp: Path) -> None:
        self.storage = storage
        self.tmp = tmp
        self.handle: BinaryIO = open(tmp, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in seal/discard

    def seal(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()

    def commit(self, key: str) -> None:
        final = self.storage.root / key
        self.storage.mkdirs(final.parent)
        os.replace(self.tmp, final)
        fsync_dir(final.parent)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


class LocalStorage:
    """An archive directory."""

    STAGING = ".staging"
    LOCK = ".lock"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = Location(str(self.root.absolute()), path=self.root.absolute())
        self._known_dirs: set[Path] = set()
        self._deleted_from: set[Path] = set()
        self._lock_fd: int | None = None

    def acquire(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise ArchiveError(f"cannot use archive directory {self.root}: {error}") from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ArchiveLockedError(f"{self.root}: another archiver is writing this directory") from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def begin_writing(self) -> None:
        staging = self.root / self.STAGING
        staging.mkdir(exist_ok=True)
        for stray in staging.iterdir():
            if stray.is_file():
                stray.unlink()
        self._deleted_from.add(staging)

    def sync_deletes(self) -> None:
        for directory in self._deleted_from:
            fsync_dir(directory)
        self._deleted_from.clear()

    def describe(self, key: str) -> str:
        return str(self.root.absolute() / key)

    def normalize(self, key: str) -> str | None:
        root = self.root.resolve()
        try:
            path = (root / key).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        return path.relative_to(root).as_posix() if path.is_relative_to(root) and path != root else None

    def is_archive_root(self) -> bool:
        return self.root.is_dir()

    def list_objects(self, hidden: bool = False) -> Iterator[ObjectInfo]:
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            if not hidden:
                dirnames[:] = [name for name in dirnames if not name.startswith(".")]
            for name in filenames:
                path = Path(dirpath) / name
                with contextlib.suppress(FileNotFoundError):
                    found.append(ObjectInfo(path.relative_to(self.root).as_posix(), path.stat().st_size))
        yield from sorted(found, key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def open(self, key: str) -> BinaryIO:
        return open(self.root / key, "rb", buffering=1 << 20)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / key).unlink()
        self._deleted_from.add((self.root / key).parent)

    def mkdirs(self, directory: Path) -> None:
        """Create ``directory`` and fsync the parent of each level created."""
        if directory in self._known_dirs:
            return
        missing: list[Path] = []
        probe = directory
        while probe != self.root and not probe.exists():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            fsync_dir(path.parent)
        self._known_dirs.add(directory)

    def new_upload(self, name: str) -> Upload:
        return _LocalUpload(self, self.root / self.STAGING / name)

    def put(self, key: str, data: bytes) -> None:
        upload = self.new_upload(posixpath.basename(key) + ".put.tmp")
        try:
            upload.handle.write(data)
            upload.seal()
            upload.commit(key)
        except BaseException:
            upload.discard()
            raise

    def read_many(self, keys: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        for key in keys:
            try:
                yield key, self.read(key)
            except OSError as error:
                yield key, error


# -- S3 -----------------------------------------------------------------------------------------
_TRANSIENT_CODES = {
    "InternalError",
    "ServiceUnavailable",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "Throttling",
    "ThrottlingException",
}
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}


class _S3Upload:
    def __init__(self, storage: S3Storage) -> None:
        self.storage = storage
        self.handle: BinaryIO = cast(
            BinaryIO,
            tempfile.SpooledTemporaryFile(storage.settings.spool_bytes),  # noqa: SIM115
        )
        self.size = 0

    def seal(self) -> None:
        self.handle.flush()
        self.size = self.handle.tell()

    def commit(self, key: str) -> None:
        self.storage.put_stream(key, self.handle, self.size)
        self.handle.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.handle.close()


class S3Storage:
    """A prefix of an S3 bucket (AWS S3 or any S3-compatible store)."""

    def __init__(self, location: Location, settings: ArchiveS3Settings | None = None) -> None:
        import urllib3
        from minio import Minio

        assert location.bucket is not None
        self.location = location
        self.bucket = location.bucket
        self.settings = settings if settings is not None else ArchiveS3Settings()
        self.retries = 0  # transient failures retried (all requests of this storage)
        self._lock = threading.Lock()
        endpoint = self.settings.endpoint_url or f"https://s3.{self.settings.region}.amazonaws.com"
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"S3 endpoint {endpoint!r}: give http(s)://host[:port]")
        if parts.path.strip("/"):
            raise ConfigError(f"S3 endpoint {endpoint!r}: give no path (the bucket comes from the s3:// URL)")
        self.endpoint = f"{parts.scheme}://{parts.netloc}"
        # Retries are ours (bounded, counted); urllib3's own would hide them and multiply them.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(
                connect=self.settings.connect_timeout_seconds, read=self.settings.read_timeout_seconds
            ),
            retries=False,
            maxsize=max(4, self.settings.read_concurrency),
        )

        def secret(value: Any) -> str | None:
            return None if value is None else str(value.get_secret_value())

        self.client = Minio(
            parts.netloc,
            access_key=secret(self.settings.access_key_id),
            secret_key=secret(self.settings.secret_access_key),
            session_token=secret(self.settings.session_token),
            secure=parts.scheme == "https",
            region=self.settings.region,
            http_client=http,
        )

    def __repr__(self) -> str:  # never the credentials
        return f"S3Storage({self.location.url!r}, endpoint={self.endpoint!r})"

    def acquire(self) -> None:
        # No lock on object storage (conditional writes cannot be trusted, see above): one
        # archiver per prefix is the deployment's rule. The probe makes a bad bucket, refused
        # credentials or an unreachable endpoint one clear error before anything is consumed.
        self.check()

    def release(self) -> None:
        pass

    def begin_writing(self) -> None:
        pass  # a PUT leaves no partial object behind

    def sync_deletes(self) -> None:
        pass  # a DELETE is durable when it returns

    # -- keys ----------------------------------------------------------------------------------
    def _key(self, key: str) -> str:
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _relative(self, full: str) -> str:
        prefix = self.location.prefix
        return full[len(prefix) + 1 :] if prefix else full

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def normalize(self, key: str) -> str | None:
        if not key or key.startswith("/") or "\\" in key or "\x00" in key:
            return None
        return key if all(part not in ("", ".", "..") for part in key.split("/")) else None

    # -- requests ------------------------------------------------------------------------------
    def _classify(self, error: Exception) -> tuple[bool, str]:
        """(transient?, one-line reason)."""
        from minio.error import InvalidResponseError, S3Error, ServerError

        if isinstance(error, S3Error):
            if error.code == "NoSuchBucket":
                return False, f"bucket {self.bucket!r} does not exist at {self.endpoint}"
            if error.code in _AUTH_CODES:
                return False, (
                    f"{self.endpoint} refused the credentials ({error.code}): check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY"
                )
            return error.code in _TRANSIENT_CODES, f"{error.code}: {error.message}"
        if isinstance(error, ServerError):
            return True, f"server error {error.status_code}"
        if isinstance(error, InvalidResponseError):
            return True, "invalid response"
        text = str(error)
        reason = type(error).__name__
        if "Connection refused" in text or "NewConnectionError" in text or "ConnectTimeout" in reason:
            reason = "connection refused or timed out"
        elif "timed out" in text.lower():
            reason = "timed out"
        return True, f"{reason} ({self.endpoint})"

    def _call(self, what: str, key: str, call: Callable[[], _T]) -> _T:
        """Run one request with bounded retries of transient failures."""
        import urllib3.exceptions
        from minio.error import MinioException

        delay = self.settings.retry_backoff_seconds
        attempt = 0
        while True:
            try:
                return call()
            except (MinioException, urllib3.exceptions.HTTPError, OSError) as error:
                if _is_missing(error):
                    raise FileNotFoundError(self.describe(key)) from None
                transient, reason = self._classify(error)
                if not transient:
                    raise StorageError(f"{self.location.url}: {reason}") from None
                if attempt >= self.settings.max_retries:
                    raise StorageError(
                        f"{self.location.url}: {what} {key or '/'} failed after {attempt} retries "
                        f"(CT_ARCHIVE_S3_MAX_RETRIES): {reason}"
                    ) from None
                attempt += 1
                with self._lock:
                    self.retries += 1
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def check(self) -> None:
        """One request that proves the bucket exists and the credentials work (StorageError if not)."""

        def probe() -> None:
            # A listing (not bucket_exists: HEAD answers carry no error code to tell 403 from 404).
            next(iter(self.client.list_objects(self.bucket, prefix=self._key(MARKER_KEY))), None)

        self._call("listing", "", probe)

    def is_archive_root(self) -> bool:
        self.check()
        return True

    def list_objects(self, hidden: bool = False) -> Iterator[ObjectInfo]:
        prefix = f"{self.location.prefix}/" if self.location.prefix else ""

        def listing() -> list[ObjectInfo]:
            return [
                ObjectInfo(self._relative(obj.object_name), int(obj.size or 0))
                for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if obj.object_name and not obj.is_dir
            ]

        yield from sorted(self._call("listing", prefix, listing), key=lambda info: info.key)

    def exists(self, key: str) -> bool:
        try:
            self._call("stat", key, lambda: self.client.stat_object(self.bucket, self._key(key)))
        except FileNotFoundError:
            return False
        return True

    def read(self, key: str) -> bytes:
        def get() -> bytes:
            response = self.client.get_object(self.bucket, self._key(key))
            try:
                return bytes(response.read())
            finally:
                response.close()
                response.release_conn()

        return self._call("get", key, get)

    def open(self, key: str) -> BinaryIO:
        # Chunks are read whole into a spooled file: a retry then never resumes a half-read stream.
        spool = cast(BinaryIO, tempfile.SpooledTemporaryFile(self.settings.spool_bytes))  # noqa: SIM115 - returned

        def get() -> None:
            spool.seek(0)
            spool.truncate()
            response = self.client.get_object(self.bucket, self._key(key))
            try:
                for block in response.stream(1 << 20):
                    spool.write(block)
            finally:
                response.close()
                response.release_conn()

        try:
            self._call("get", key, get)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.remove_object(self.bucket, self._key(key)))

    def put_stream(self, key: str, stream: BinaryIO, size: int) -> None:
        def put() -> None:
            stream.seek(0)
            self.client.put_object(
                self.bucket,
                self._key(key),
                stream,
                size,
                content_type="application/gzip" if key.endswith(".gz") else "application/json",
                part_size=64 << 20 if size > 64 << 20 else 0,
                num_parallel_uploads=1,
            )

        self._call("put", key, put)

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, io.BytesIO(data), len(data))

    def new_upload(self, name: str) -> Upload:
        return _S3Upload(self)

    def read_many(self, keys: list[str]) -> Iterator[tuple[str, bytes | Exception]]:
        def one(key: str) -> bytes | Exception:
            try:
                return self.read(key)
            except (OSError, StorageError) as error:
                if isinstance(error, StorageError):
                    raise
                return error

        with ThreadPoolExecutor(self.settings.read_concurrency) as pool:
            yield from zip(keys, pool.map(one, keys), strict=True)


def _is_missing(error: Exception) -> bool:
    from minio.error import S3Error

    return isinstance(error, S3Error) and error.code in ("NoSuchKey", "NoSuchObject", "NotFound")


def open_storage(location: str | os.PathLike[str] | Location, s3: ArchiveS3Settings | None = None) -> Storage:
    """The storage of an archive location (nothing is contacted yet)."""
    parsed = location if isinstance(location, Location) else parse_location(location)
    if parsed.is_s3:
        return S3Storage(parsed, s3)
    assert parsed.path is not None
    return LocalStorage(parsed.path)
