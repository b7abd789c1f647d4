"""Apply one record all or nothing: the engine's outputs, then its table writes.

:meth:`streams.processor.Engine.process` updates the engine's caches (applied offsets, watermark,
open contests) before the outputs are sent and the table written. If anything between the two
fails (a window result not acknowledged in time, a send refused, a table write raising), the
caches are ahead of the table; an agent that went on would never apply the record. So
:class:`RecordApplier` drops the caches on any failure (the table, holding a prefix of the
record's writes, is the truth, which streams/state.py is built to replay from), processes the
record again and retries, with a backoff, for up to ``retry_s`` (``CT_WORKER_APPLY_RETRY_S``:
a broker failing over, or faust's changelog metadata still missing right after a start); then it
raises :class:`~streams.exceptions.ApplyError` and the worker stops with a non-zero exit (faust
must not go on past the hole).

Dead letters and contest records are not awaited per record (a produce round trip per record
would cap the worker, see docs/known-issues.md); their delivery is watched instead: the first
that fails is kept in :attr:`RecordApplier.failure`, the next record raises ``ApplyError``, and
the producer flush faust runs before every offset commit raises too
(:func:`streams.faust_patches.check_outputs_before_commit`), so no offset is committed past an
output that was not stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from streams.exceptions import ApplyError
from streams.processor import Engine, Outputs

__all__ = ["OutputSender", "RecordApplier"]

log = logging.getLogger(__name__)


class OutputSender(Protocol):
    """Sends one output record; returns the delivery future (raises when it cannot be queued)."""

    def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None
    ) -> Awaitable[asyncio.Future[Any]]: ...


class RecordApplier:
    def __init__(
        self,
        engine: Engine,
        table: MutableMapping[str, Any],
        send: OutputSender,
        *,
        dlq_topic: str,
        records_topic: str,
        windows_topic: str,
        window_timeout_s: float,
        retry_s: float = 30.0,
        backoff_s: float = 0.25,
        max_backoff_s: float = 2.0,
        on_applied: Callable[[int, int, Outputs], None] | None = None,
    ) -> None:
        self.engine = engine
        self.table = table
        self.send = send
        self.dlq_topic = dlq_topic
        self.records_topic = records_topic
        self.windows_topic = windows_topic
        self.window_timeout_s = window_timeout_s
        self.retry_s = retry_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_applied = on_applied
        self.failure: BaseException | None = None
        self.retried = 0

    def _watch(self, future: asyncio.Future[Any]) -> None:
        def done(fut: asyncio.Future[Any]) -> None:
            if fut.cancelled():
                exc: BaseException | None = asyncio.CancelledError("output send cancelled")
            else:
                exc = fut.exception()
            if exc is not None and self.failure is None:
                self.failure = exc
                log.error(
                    "an output could not be stored: %r; the worker stops before committing past it", exc
                )

        future.add_done_callback(done)

    def check(self) -> None:
        """Raise :class:`ApplyError` when an output sent earlier was not stored."""
        if self.failure is not None:
            raise ApplyError(f"an output could not be stored: {self.failure!r}")

    async def _emit(self, out: Outputs) -> None:
        send, watch = self.send, self._watch
        for key, value, headers in out.dlq:
            watch(await send(self.dlq_topic, key, value, headers))
        for key, value in out.records:
            watch(await send(self.records_topic, key, value, None))
        if out.windows:
            # A state that says "emitted" must not reach the changelog before the result.
            futures = [await send(self.windows_topic, key, value, None) for key, value in out.windows]
            await asyncio.wait_for(asyncio.gather(*futures), self.window_timeout_s)
        table = self.table
        for tkey, tvalue in out.writes:
            if tvalue is not None:
                table[tkey] = tvalue
            elif tkey in table:
                del table[tkey]  # a tombstone in the changelog: compaction drops the key

    async def apply(
        self,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: float | None,
        topic: str,
    ) -> Outputs:
        started = time.monotonic()
        attempt = 0
        while True:
            self.check()
            out = self.engine.process(partition, offset, key, value, timestamp_ms, topic)
            try:
                await self._emit(out)
            except Exception as exc:
                # The caches are ahead of the table now: forget them, the table is the truth.
                self.engine.reset()
                attempt += 1
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                if time.monotonic() - started + delay > self.retry_s:
                    raise ApplyError(
                        f"{topic}[{partition}]@{offset}: could not apply after {attempt} attempts: {exc!r}"
                    ) from exc
                self.retried += 1
                log.warning(
                    "%s[%d]@%d: applying failed (%r); reloading state and trying again in %.1f s",
                    topic,
                    partition,
                    offset,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            if self.on_applied is not None:
                self.on_applied(partition, offset, out)
            return out
