"""The corrections streams/faust_patches.py makes to faust, each on the faust class it patches."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.transport.producer import ProducerBuffer

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
