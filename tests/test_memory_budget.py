"""Issue budget: a worker's state for 1,000 active hubs with 15 retained windows each, plus one hub
holding 100,000 open contests, fits in 512 MB.

Runs benchmarks/stream_memory.py in a fresh process (so the RSS is the engine's, not pytest's).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_thousand_hubs_and_a_hundred_thousand_open_contests_fit_the_memory_budget() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "stream_memory.py"),
            "--hubs",
            "1000",
            "--windows",
            "15",
            "--contests",
            "10",
            "--open-contests",
            "100000",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["hubs_in_snapshot"] == 1000
    assert report["retained_windows_min"] == report["retained_windows_max"] == 15
    assert report["open_contests"] == 100_000
    assert report["largest_state_value_bytes"] < 512 * 1024
    assert report["peak_rss_mb"] <= 512, report
