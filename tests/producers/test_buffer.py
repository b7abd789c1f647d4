"""producers/buffer.py: CT_PUBLISHER_BUFFER_SIZE bounds every event the publisher holds, those the
sender took and the broker has not acknowledged included."""

from __future__ import annotations

import asyncio

from producers.buffer import EventBuffer


def test_events_in_flight_count_against_the_size() -> None:
    buffer = EventBuffer(size=3, batch=10)
    assert all(buffer.add("h", b"{}") for _ in range(3))
    assert not buffer.add("h", b"{}")
    hubs, _ = buffer.drain()
    assert len(hubs) == 3 and len(buffer) == 0 and buffer.inflight == 3
    # Drained but not acknowledged: still in memory, still no room.
    assert not buffer.add("h", b"{}")
    buffer.settled(2)
    assert buffer.add("h", b"{}") and buffer.add("h", b"{}")
    assert not buffer.add("h", b"{}")


def test_a_caller_waiting_for_room_wakes_when_deliveries_settle() -> None:
    async def scenario() -> list[str]:
        buffer = EventBuffer(size=1, batch=10)
        assert buffer.add("h", b"{}")
        buffer.drain()
        steps: list[str] = []

        async def caller() -> None:
            while not buffer.add("h", b"{}"):
                await buffer.wait_for_room()
            steps.append("added")

        task = asyncio.create_task(caller())
        await asyncio.sleep(0.01)
        steps.append("acknowledged")
        buffer.settled(1)
        await asyncio.wait_for(task, 1)
        return steps

    assert asyncio.run(scenario()) == ["acknowledged", "added"]
