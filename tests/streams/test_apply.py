"""streams/apply.py: a record is applied all or nothing (fault injection at each step).

The engine is real and driven like the agent drives it; the table is a dict and the producer a
fake whose deliveries can fail (unit tests of the pure retry logic; the worker's real broker tests
are in test_worker_kafka.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from streams.apply import RecordApplier
from streams.exceptions import ApplyError
from streams.processor import Engine
from streams.settings import WorkerSettings
from tests.helpers.streams_reference import T0, P, check_all, iso, make_events, reference_windows
from tests.streams.engine_harness import envelopes

STEPS = ["dlq", "records", "windows", "window-ack", "table"]
_ALL_STEPS = [*STEPS, "record-ack"]


class Faults:
    """Fail the n-th call of a step (once, or always)."""

    def __init__(self, step: str | None = None, at: int = 0, always: bool = False) -> None:
        self.step, self.at, self.always, self.calls = step, at, always, dict.fromkeys(_ALL_STEPS, 0)

    def hit(self, step: str) -> bool:
        n = self.calls[step]
        self.calls[step] += 1
        return step == self.step and (n == self.at or (self.always and n >= self.at))


class Table(dict):  # type: ignore[type-arg]
    def __init__(self, faults: Faults) -> None:
        super().__init__()
        self.faults = faults

    def __setitem__(self, key: str, value: Any) -> None:
        if self.faults.hit("table"):
            raise RuntimeError("table write failed")
        super().__setitem__(key, value)


class Producer:
    def __init__(self, faults: Faults, topics: dict[str, str]) -> None:
        self.faults, self.topics = faults, topics
        self.sent: dict[str, list[bytes]] = {"dlq": [], "records": [], "windows": []}
        self.later: list[asyncio.Future[Any]] = []

    async def __call__(
        self, topic: str, key: bytes | None, value: bytes, headers: Any
    ) -> asyncio.Future[Any]:
        kind = self.topics[topic]
        if self.faults.hit(kind):
            raise RuntimeError(f"{kind} send refused")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent[kind].append(value)
        if kind == "windows" and self.faults.hit("window-ack"):
            return fut  # never acknowledged: the applier's timeout fires
        if kind == "records" and self.faults.hit("record-ack"):
            return fut  # never acknowledged: a staged flush must not write the state after it
        fut.set_result(None)
        return fut


def _records() -> list[tuple[str, bytes]]:
    events = make_events(hubs=2, contests_per_hub=60, span_ms=240_000, seed=21)
    recs = envelopes(events, per=10)
    bad = (b"hub-0", b"\xffnot json")
    tick = {"message": P + "armed", "timestamp": iso(T0 + 3_600_000), "hubId": "tick", "contestKey": "k"}
    return [*recs[:7], (bad[0].decode(), bad[1]), *recs[7:], ("tick", orjson.dumps(tick))], events  # type: ignore[return-value]


def _run(
    faults: Faults, *, stage: bool = False, table: Table | None = None, start: int = 0
) -> tuple[Producer, RecordApplier]:
    """Apply the records from ``start`` (staged: writing the state every 5 records and at the end)."""
    recs, _ = _records()
    topics = {"dlq": "dlq", "records": "records", "windows": "windows"}
    table = table if table is not None else Table(faults)
    engine = Engine(WorkerSettings(window_s=60, grace_s=30), table, stage=stage)
    producer = Producer(faults, topics)
    applier = RecordApplier(
        engine,
        table,
        producer,
        dlq_topic="dlq",
        records_topic="records",
        windows_topic="windows",
        window_timeout_s=0.05,
        retry_s=0.5,
        backoff_s=0.01,
        max_backoff_s=0.02,
        flush_s=3600,
        flush_events=50,
    )

    async def go() -> None:
        for offset, (hub, value) in enumerate(recs):
            if offset >= start:
                await applier.apply(0, offset, hub.encode(), value, 0.0, "contest.events")
        await applier.flush_state()

    asyncio.run(go())
    return producer, applier


def _windows(producer: Producer) -> list[dict[str, Any]]:
    out = {}
    for value in producer.sent["windows"]:
        w = orjson.loads(value)
        if w["windowStartMs"] < T0 + 3_000_000 and w["hubId"] != "tick":
            out[w["windowId"]] = w  # a retried record sends its results again: same id, same content
    return list(out.values())


# Staged, a failed state write is not retried: it stops the worker (the next tests); nor is an
# output never acknowledged (a window result, like a contest record): the flush that would write
# the state after it stops the worker.
_RETRIED = [(step, False) for step in STEPS] + [
    (step, True) for step in STEPS if step not in ("table", "window-ack")
]


@pytest.mark.parametrize(
    ("step", "stage"), _RETRIED, ids=[f"{s}-{'staged' if g else 'per-record'}" for s, g in _RETRIED]
)
def test_a_failure_at_any_step_is_retried_from_the_table(step: str, stage: bool) -> None:
    _, events = _records()
    for at in (0, 3):
        faults = Faults(step, at)
        producer, applier = _run(faults, stage=stage)
        hit = faults.calls[step] > at  # the one dead letter gives the dlq step a single call
        assert applier.retried == (1 if hit else 0), (step, at)
        assert check_all(_windows(producer), reference_windows(events)) == [], (step, at)


@pytest.mark.parametrize("stage", [False, True], ids=["per-record", "staged"])
@pytest.mark.parametrize("step", STEPS)
def test_a_lasting_failure_stops_with_apply_error(step: str, stage: bool) -> None:
    stops_at_flush = stage and step in ("table", "window-ack")  # staged: outputs are awaited there
    expected = "writing the staged state failed" if stops_at_flush else "could not apply after"
    with pytest.raises(ApplyError, match=expected):
        _run(Faults(step, 0, always=True), stage=stage)


@pytest.mark.parametrize("at", [0, 7, 30])
def test_a_failed_staged_write_stops_and_a_restart_reads_again_from_the_table(at: int) -> None:
    """Staged: a state write that fails stops the worker (nothing more is written or committed);
    a new process on the table holding a prefix of that flush reads again from its applied
    offset, and the windows of both runs equal the reference (a window sent twice keeps its id)."""
    recs, events = _records()
    topics = {"dlq": "dlq", "records": "records", "windows": "windows"}
    table = Table(Faults("table", at))
    sent: list[bytes] = []

    def applier_on(engine: Engine) -> tuple[RecordApplier, Producer]:
        producer = Producer(Faults(), topics)
        applier = RecordApplier(
            engine,
            table,
            producer,
            dlq_topic="dlq",
            records_topic="records",
            windows_topic="windows",
            window_timeout_s=0.05,
            flush_s=3600,
            flush_events=50,
        )
        return applier, producer

    async def run(start: int) -> None:
        engine = Engine(WorkerSettings(window_s=60, grace_s=30), table, stage=True)
        applier, producer = applier_on(engine)
        try:
            for offset in range(max(start, engine.applied(0) + 1), len(recs)):
                hub, value = recs[offset]
                await applier.apply(0, offset, hub.encode(), value, 0.0, "contest.events")
            await applier.flush_state()
        finally:
            sent.extend(producer.sent["windows"])

    with pytest.raises(ApplyError, match="writing the staged state failed"):
        asyncio.run(run(0))
    stopped_at = len(sent)
    table.faults = Faults()  # the restarted process: its table recovered the prefix
    asyncio.run(run(0))
    assert len(sent) > stopped_at  # the restart sent windows of its own
    windows = {}
    for value in sent:
        w = orjson.loads(value)
        if w["windowStartMs"] < T0 + 3_000_000 and w["hubId"] != "tick":
            windows[w["windowId"]] = w
    assert check_all(list(windows.values()), reference_windows(events)) == []


@pytest.mark.parametrize("step", ["record-ack", "window-ack"])
def test_a_staged_flush_writes_no_state_before_its_records_outputs_are_acknowledged(step: str) -> None:
    """Staged: a contest record or window result never acknowledged makes the flush that follows
    it stop the worker without writing a single state value (the state would say its record was
    applied). The records after it are not held up waiting for the acknowledgement."""
    faults = Faults(step, 0 if step == "window-ack" else 2)
    table = Table(Faults())
    with pytest.raises(ApplyError, match="writing the staged state failed"):
        _run(faults, stage=True, table=table)
    assert faults.calls[step] >= 1
    if step == "record-ack":
        assert table == {}  # the first flush (50 events) comes after the unacknowledged record
    else:  # the very first window result: no state may say a window closed
        assert table and not [k for k in table if k.startswith("c:")]


@pytest.mark.parametrize("when", ["before", "during"])
def test_a_failed_delivery_stops_the_next_record_and_the_commit_flush(when: str) -> None:
    """A dead letter or contest record is not awaited per record; when its delivery fails, the
    next record and faust's pre-commit flush (streams/faust_patches.py) raise ApplyError. A
    delivery that fails *during* the flush (its done-callback not run yet when the flush returns)
    stops the commit too."""
    from faust.transport.drivers.aiokafka import Producer as FaustProducer

    from streams.faust_patches import check_outputs_before_commit

    applier = _run(Faults())[1]

    async def fail_one() -> None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        applier._watch(fut)
        if when == "before":
            fut.set_exception(RuntimeError("MessageSizeTooLarge"))
            await asyncio.sleep(0)
            with pytest.raises(ApplyError, match="could not be stored"):
                await applier.apply(0, 10**6, b"h", b"{}", 0.0, "contest.events")
        check_outputs_before_commit()

        class App:
            pass

        producer: Any = FaustProducer.__new__(FaustProducer)
        producer.app = App()
        producer.app.applier = applier

        async def flushed(self: Any) -> None:
            if not fut.done():  # acknowledged (here: refused) while faust flushes
                fut.set_exception(RuntimeError("MessageSizeTooLarge"))

        original = FaustProducer._ct_original_producer_flush  # type: ignore[attr-defined]
        FaustProducer._ct_original_producer_flush = flushed  # type: ignore[attr-defined]
        try:
            with pytest.raises(ApplyError):
                await FaustProducer.flush(producer)
        finally:
            FaustProducer._ct_original_producer_flush = original  # type: ignore[attr-defined]

    asyncio.run(fail_one())
