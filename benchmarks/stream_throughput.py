"""Stream worker throughput vs aiokafka ceiling and the idiomatic faust loop (see streams/bench.py).

Usage: ``python benchmarks/stream_throughput.py --events 200000 --json`` (starts an embedded broker
unless ``--bootstrap`` or ``KAFKA_BOOTSTRAP_SERVERS`` is given).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from streams.bench import main

if __name__ == "__main__":
    sys.exit(main())
