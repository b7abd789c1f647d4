"""Run stream workers as subprocesses and publish/read test data (tests of streams/)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from contest_telemetry.settings import TopicSettings

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(
        self,
        bootstrap: str,
        topics: TopicSettings,
        app_id: str,
        data_dir: Path,
        log_path: Path,
        **worker_env: Any,
    ) -> None:
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            **topics.as_env(),
            "CT_WORKER_APP_ID": app_id,
            "CT_WORKER_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
            # Every worker serves an exporter: a free port each, so workers side by side never clash.
            "CT_EXPORTER_PORT": "0",
            **{f"CT_WORKER_{k.upper()}": str(v) for k, v in worker_env.items()},
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "warn"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


async def produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    partition_of: Callable[[int], int | None] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = []
        for i, (key, value) in enumerate(records):
            partition = partition_of(i) if partition_of else None
            futures.append(await producer.send(topic, value, key=key, partition=partition))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Any]], bool],
    *,
    timeout: float = 120.0,
    alive: Callable[[], bool] | None = None,
) -> list[Any]:
    """Read ``topic`` from the start (values as JSON) until ``done(values)`` or the deadline."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(orjson.loads(r.value) for r in records)
            if done(out):
                return out
            if alive is not None and not alive():
                raise AssertionError("a worker died")
    finally:
        await consumer.stop()
    raise AssertionError(f"{topic}: condition not met within {timeout}s ({len(out)} values)")
