"""Which S3 client for the archive: obstore, aiobotocore, boto3 and minio against S3Proxy.

One S3Proxy (tests/helpers/s3proxy.py, filesystem provider, 127.0.0.1) per run; each client, in
turn, writes ``--objects`` chunk-sized objects (random bytes, incompressible like gzip chunks) one
after the other as the archiver does (chunk, then its small manifest object), lists the prefix,
and reads every chunk back. Figures are operations and MB per second; the same objects, server
and machine for every client. Clients that are not installed are listed as skipped.

Botocore-based clients are configured with ``request_checksum_calculation`` /
``response_checksum_validation`` = ``when_required``: newer SDKs otherwise send checksum headers
S3Proxy rejects (NotImplemented).

Only minio is a dependency; to compare, ``.venv/bin/pip install obstore aiobotocore boto3`` first.

Usage: ``.venv/bin/python benchmarks/s3_clients.py [--objects N] [--size BYTES] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.helpers.s3proxy import S3Proxy

BUCKET = "bench"


def _timed(step: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    count = step()
    return time.perf_counter() - start, count


def bench_obstore(proxy: S3Proxy, prefix: str, blobs: list[bytes], manifest: bytes) -> dict[str, float]:
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=proxy.endpoint,
        access_key_id=proxy.access_key,
        secret_access_key=proxy.secret_key,
        region="us-east-1",
        client_options={"allow_http": True},
    )
    import obstore

    def put() -> int:
        for i, blob in enumerate(blobs):
            obstore.put(store, f"{prefix}/c/{i:06d}", blob)
            obstore.put(store, f"{prefix}/m/{i:06d}", manifest)
        return len(blobs)

    def listing() -> int:
        return sum(len(page) for page in obstore.list(store, prefix=f"{prefix}/"))

    def get() -> int:
        return sum(len(obstore.get(store, f"{prefix}/c/{i:06d}").bytes()) for i in range(len(blobs)))

    return _measure(put, listing, get, blobs)


def _boto_config() -> Any:
    from botocore.config import Config

    return Config(request_checksum_calculation="when_required", response_checksum_validation="when_required")


def bench_boto3(proxy: S3Proxy, prefix: str, blobs: list[bytes], manifest: bytes) -> dict[str, float]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=proxy.endpoint,
        aws_access_key_id=proxy.access_key,
        aws_secret_access_key=proxy.secret_key,
        region_name="us-east-1",
        config=_boto_config(),
    )

    def put() -> int:
        for i, blob in enumerate(blobs):
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/c/{i:06d}", Body=blob)
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/m/{i:06d}", Body=manifest)
        return len(blobs)

    def listing() -> int:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
        return sum(len(page.get("Contents", [])) for page in pages)

    def get() -> int:
        return sum(
            len(client.get_object(Bucket=BUCKET, Key=f"{prefix}/c/{i:06d}")["Body"].read())
            for i in range(len(blobs))
        )

    return _measure(put, listing, get, blobs)


def bench_aiobotocore(proxy: S3Proxy, prefix: str, blobs: list[bytes], manifest: bytes) -> dict[str, float]:
    from aiobotocore.session import get_session

    async def main() -> dict[str, float]:
        session = get_session()
        async with session.create_client(
            "s3",
            endpoint_url=proxy.endpoint,
            aws_access_key_id=proxy.access_key,
            aws_secret_access_key=proxy.secret_key,
            region_name="us-east-1",
            config=_boto_config(),
        ) as client:
            result: dict[str, float] = {}
            start = time.perf_counter()
            for i, blob in enumerate(blobs):
                await client.put_object(Bucket=BUCKET, Key=f"{prefix}/c/{i:06d}", Body=blob)
                await client.put_object(Bucket=BUCKET, Key=f"{prefix}/m/{i:06d}", Body=manifest)
            result["put"] = time.perf_counter() - start
            start = time.perf_counter()
            listed = 0
            async for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=BUCKET, Prefix=f"{prefix}/"
            ):
                listed += len(page.get("Contents", []))
            result["list"] = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(len(blobs)):
                response = await client.get_object(Bucket=BUCKET, Key=f"{prefix}/c/{i:06d}")
                async with response["Body"] as body:
                    await body.read()
            result["get"] = time.perf_counter() - start
            assert listed == 2 * len(blobs)
            return _rates(result, blobs)

    return asyncio.run(main())


def bench_minio(proxy: S3Proxy, prefix: str, blobs: list[bytes], manifest: bytes) -> dict[str, float]:
    from minio import Minio

    client = Minio(
        proxy.endpoint.removeprefix("http://"),
        access_key=proxy.access_key,
        secret_key=proxy.secret_key,
        secure=False,
        region="us-east-1",
    )

    def put() -> int:
        for i, blob in enumerate(blobs):
            client.put_object(BUCKET, f"{prefix}/c/{i:06d}", io.BytesIO(blob), len(blob))
            client.put_object(BUCKET, f"{prefix}/m/{i:06d}", io.BytesIO(manifest), len(manifest))
        return len(blobs)

    def listing() -> int:
        return sum(1 for _ in client.list_objects(BUCKET, prefix=f"{prefix}/", recursive=True))

    def get() -> int:
        total = 0
        for i in range(len(blobs)):
            response = client.get_object(BUCKET, f"{prefix}/c/{i:06d}")
            try:
                total += len(response.read())
            finally:
                response.close()
                response.release_conn()
        return total

    return _measure(put, listing, get, blobs)


def _measure(
    put: Callable[[], int], listing: Callable[[], int], get: Callable[[], int], blobs: list[bytes]
) -> dict[str, float]:
    seconds: dict[str, float] = {}
    seconds["put"], _ = _timed(put)
    seconds["list"], listed = _timed(listing)
    seconds["get"], read = _timed(get)
    assert listed == 2 * len(blobs), listed
    assert read == sum(map(len, blobs)), read
    return _rates(seconds, blobs)


def _rates(seconds: dict[str, float], blobs: list[bytes]) -> dict[str, float]:
    n = len(blobs)
    mb = sum(map(len, blobs)) / 1e6
    return {
        "putChunksPerSecond": round(n / seconds["put"], 1),  # a chunk and its manifest object
        "putMBps": round(mb / seconds["put"], 1),
        "listObjectsPerSecond": round(2 * n / seconds["list"]),
        "getChunksPerSecond": round(n / seconds["get"], 1),
        "getMBps": round(mb / seconds["get"], 1),
    }


CLIENTS: dict[str, tuple[str, Callable[..., dict[str, float]]]] = {
    "obstore": ("obstore", bench_obstore),
    "aiobotocore": ("aiobotocore", bench_aiobotocore),
    "boto3": ("boto3", bench_boto3),
    "minio": ("minio", bench_minio),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=60)
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per chunk object (1 MiB)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    blobs = [os.urandom(args.size) for _ in range(args.objects)]
    manifest = b'{"kind":"chunk","file":"x"}' + b" " * 400 + b"\n"
    results: dict[str, Any] = {}
    with S3Proxy() as proxy:
        proxy.create_bucket(BUCKET)
        for name, (module, bench) in CLIENTS.items():
            if importlib.util.find_spec(module) is None:
                results[name] = {"skipped": f"{module} not installed"}
                continue
            bench(proxy, f"warmup-{name}", blobs[:3], manifest)  # connections, JIT of the server
            results[name] = bench(proxy, name, blobs, manifest)
    summary = {"objects": args.objects, "objectBytes": args.size, "results": results}
    if args.json:
        print(json.dumps(summary))
        return 0
    table = Table(title=f"S3 clients vs S3Proxy: {args.objects} objects of {args.size:,} bytes")
    columns = ("client", "put chunk+manifest/s", "put MB/s", "list obj/s", "get/s", "get MB/s")
    for column in columns:
        table.add_column(column, justify="left" if column == "client" else "right")
    for name, row in results.items():
        if "skipped" in row:
            table.add_row(name, row["skipped"], "", "", "", "")
            continue
        table.add_row(
            name,
            f"{row['putChunksPerSecond']:,.1f}",
            f"{row['putMBps']:,.1f}",
            f"{row['listObjectsPerSecond']:,}",
            f"{row['getChunksPerSecond']:,.1f}",
            f"{row['getMBps']:,.1f}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
