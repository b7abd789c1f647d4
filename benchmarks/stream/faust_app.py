"""The idiomatic faust baseline: one event per record, ``async for value in stream`` +
``json.loads`` + one update of a tumbling windowed table per event. It times itself from its first
event to the ``expect``-th and writes ``{"events", "seconds"}`` to ``report``.

Started by :class:`benchmarks.stream.baselines.Baseline` as ``python -m benchmarks.stream.faust_app
BOOTSTRAP TOPIC EXPECT REPORT APP_ID DATADIR``; it uses nothing of the product, on purpose.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from typing import Any

import faust


def build(bootstrap: str, topic: str, expect: int, report: str, app_id: str, datadir: str) -> faust.App:
    app = faust.App(
        app_id,
        broker="kafka://" + bootstrap,
        store="memory://",
        datadir=datadir,
        topic_partitions=2,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        producer_acks=1,
        table_standby_replicas=0,
    )
    src = app.topic(topic, value_type=bytes, value_serializer="raw", partitions=2)
    counts = app.Table("counts", default=int, partitions=2).tumbling(
        timedelta(seconds=60), expires=timedelta(minutes=10)
    )
    state: dict[str, Any] = {"n": 0, "t0": None}

    @app.agent(src)
    async def agent(stream: Any) -> None:
        async for value in stream:
            ev = json.loads(value)
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            counts[ev["hubId"]] += 1
            state["n"] += 1
            if state["n"] == expect:
                # Whole or absent: the benchmark reads the report as soon as it exists.
                tmp = report + ".tmp"
                with open(tmp, "w") as f:
                    json.dump({"events": expect, "seconds": time.perf_counter() - state["t0"]}, f)
                os.replace(tmp, report)

    return app


def main(argv: list[str]) -> None:
    bootstrap, topic, expect, report, app_id, datadir = argv
    app = build(bootstrap, topic, int(expect), report, app_id, datadir)
    faust.Worker(app, loglevel="error", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:7])
