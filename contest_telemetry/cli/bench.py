"""``contest-telemetry bench stream``: the stream worker's throughput benchmark (see streams/bench.py).

The publisher, archive, monitor and exporter benchmarks are scripts in ``benchmarks/``.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    from streams import bench as stream_bench

    parser = subparsers.add_parser("bench", help="run a benchmark (stream)")
    sub = parser.add_subparsers(dest="bench_cmd", required=True)
    stream = sub.add_parser(
        "stream",
        help="worker events/s per publishing form (single events, envelopes) vs an aiokafka ceiling and "
        "an idiomatic faust baseline; changelog bytes per event, RSS, maximum sustainable live rate",
    )
    stream_bench.add_arguments(stream)


def run(args: argparse.Namespace) -> int:
    from streams import bench as stream_bench

    return int(stream_bench.run(args))
