"""streams/faust_patches.py: the corrections it makes to faust, each on the faust class it patches,
the faust release they were checked against, and the faust internals it reads."""

from __future__ import annotations

import asyncio
import importlib.metadata
import tomllib
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.exceptions import NotReady
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from streams import faust_patches


class _SlowChannel:
    """Hands a message on after ``delay`` seconds (a broker that is slow to take changelog writes)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.published: list[int] = []

    async def publish_message(self, fut: Any, wait: bool = False) -> None:
        await asyncio.sleep(self.delay)
        self.published.append(fut.message.n)


def _message(channel: _SlowChannel, n: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(channel=channel, n=n))


async def _flush_with_slow_sends(n: int, delay: float, *, original: bool = False) -> tuple[list[int], int]:
    buffer = ProducerBuffer()
    buffer.app = SimpleNamespace(conf=SimpleNamespace(producer_threaded=False))  # type: ignore[assignment]
    channel = _SlowChannel(delay)
    await buffer.start()
    try:
        for i in range(n):
            buffer.put(_message(channel, i))
        if original:
            await getattr(ProducerBuffer, "_ct_original_flush", ProducerBuffer.flush)(buffer)
        else:
            await buffer.flush()
        return list(channel.published), buffer.size
    finally:
        buffer.pending = asyncio.Queue()  # nothing left to send on stop
        await buffer.stop()


def test_unpatched_flush_returns_with_messages_queued() -> None:
    """Pins the faust behaviour the patch exists for: if this starts failing, faust fixed its flush
    (or changed it) and the patch must be reviewed."""
    published, size = asyncio.run(_flush_with_slow_sends(5, 0.15, original=True))
    assert len(published) < 5 and size > 0


def test_patched_flush_waits_for_every_message() -> None:
    faust_patches.complete_producer_flush()
    published, size = asyncio.run(_flush_with_slow_sends(5, 0.15))
    assert published == [0, 1, 2, 3, 4]
    assert size == 0


def test_patches_apply_once() -> None:
    faust_patches.apply()
    flush = ProducerBuffer.flush
    faust_patches.apply()
    assert ProducerBuffer.flush is flush


# -- the faust release and the internals streams/faust_patches.py relies on ------------------------
def test_installed_faust_is_one_the_patches_were_checked_against() -> None:
    installed = importlib.metadata.version("faust-streaming")
    assert installed in SpecifierSet(faust_patches.FAUST_VERSIONS), (
        f"faust-streaming {installed} is outside {faust_patches.FAUST_VERSIONS}: review "
        "streams/faust_patches.py against it, then widen FAUST_VERSIONS and pyproject.toml"
    )


def test_pyproject_pins_the_checked_faust_range() -> None:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    pins = [Requirement(dep) for dep in project["dependencies"] if dep.startswith("faust-streaming")]
    assert [pin.specifier for pin in pins] == [SpecifierSet(faust_patches.FAUST_VERSIONS)]


def _app() -> tuple[faust.App, Any]:
    """A faust app that is built, never started (no broker is contacted), and its topic."""
    app = faust.App(f"ct-patches-{uuid.uuid4().hex}", broker="kafka://127.0.0.1:1", store="memory://")
    return app, app.topic("ct-patches")


def test_consumer_internals_read_by_the_stall_watchdog_exist() -> None:
    """``partition_view`` and ``refetch`` fall back when an attribute is missing: pin that faust's
    consumer still has them, so an upgrade that renames one fails here rather than going quiet."""
    app, _ = _app()
    consumer = app.consumer
    for name in ("_active_partitions", "_buffered_partitions", "_paused_partitions", "flow_active"):
        assert hasattr(consumer, name), name
    view = faust_patches.partition_view(consumer, TP("ct-patches", 0))
    assert view == {"active": False, "buffered": False, "paused": False, "flow_active": True}


def test_kafka_producer_is_faust_producers_own_and_needs_it_started() -> None:
    app, _ = _app()
    with pytest.raises(NotReady):
        faust_patches.kafka_producer(app.producer)


def test_readiness_internals_before_start() -> None:
    app, _ = _app()
    assert faust_patches.assigned_partitions(app, "ct-patches") is None
    assert not faust_patches.recovery_completed(app)
    assert not faust_patches.rebalancing(app)
    assert faust_patches.built(app, "assignor") is None  # reading did not build it


def test_chain_agent_error_calls_the_worker_hook_then_fausts() -> None:
    app, topic = _app()
    calls: list[tuple[str, str]] = []

    async def faust_hook(agent: Any, exc: BaseException) -> None:
        calls.append(("faust", str(exc)))

    async def worker_hook(agent: Any, exc: BaseException) -> None:
        calls.append(("worker", str(exc)))

    async def consume(stream: Any) -> None:
        async for _ in stream:
            pass

    agent = app.conf.Agent(consume, app=app, channel=topic, name="ct-chain", on_error=faust_hook)
    faust_patches.chain_agent_error(agent, worker_hook)
    asyncio.run(agent._on_error(agent, RuntimeError("boom")))
    assert calls == [("worker", "boom"), ("faust", "boom")]
