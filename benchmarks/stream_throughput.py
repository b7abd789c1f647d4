"""Stream worker throughput per publishing form vs an aiokafka ceiling and the idiomatic faust loop;
changelog bytes per event, peak RSS, maximum sustainable live rate (see benchmarks/stream/).

Usage: ``python benchmarks/stream_throughput.py [--form single|envelope|both] [--quick] [--events N] [--json]``
(starts an embedded Tansu broker unless ``--bootstrap`` or ``KAFKA_BOOTSTRAP_SERVERS`` is given).
Progress goes to stderr, the table too; ``--json`` prints the result on stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stream.cli import main

if __name__ == "__main__":
    sys.exit(main())
