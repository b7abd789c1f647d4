"""Issue budget: a worker's state for 1,000 active hubs with 15 retained windows each fits in 512 MB.

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


def test_thousand_hubs_with_fifteen_windows_fit_the_memory_budget() -> None:
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
    assert report["peak_rss_mb"] <= 512, report
