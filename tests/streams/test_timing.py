"""The worker's timing report (streams/timing.py): written once, whole, when N events were applied."""

from __future__ import annotations

from pathlib import Path

import orjson

from streams.settings import WorkerSettings
from streams.timing import TimingReport, peak_rss_kb


def test_no_report_unless_the_settings_ask_for_one(tmp_path: Path) -> None:
    assert TimingReport.from_settings(WorkerSettings(bench_report=tmp_path / "r.json")) is None
    report = TimingReport.from_settings(
        WorkerSettings(bench_expect_events=5, bench_report=tmp_path / "r.json")
    )
    assert report is not None and report.expect == 5 and report.path == tmp_path / "r.json"


def test_written_once_when_the_expected_count_is_reached(tmp_path: Path) -> None:
    path = tmp_path / "worker.json"
    report = TimingReport(10, path)
    report.add(4)
    report.add(5)
    assert not path.exists()
    report.add(3)  # 12 >= 10: the report, with the count reached
    first = orjson.loads(path.read_bytes())
    assert set(first) == {"events", "seconds", "rss_peak_kb", "main_thread_cpu_s", "process_cpu_s"}
    assert first["events"] == 12
    assert first["seconds"] >= 0 and first["process_cpu_s"] >= 0 and first["main_thread_cpu_s"] >= 0
    assert first["rss_peak_kb"] > 0
    path.unlink()
    report.add(100)  # past the count: not written again
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_peak_rss_is_at_least_the_current_rss() -> None:
    status = Path("/proc/self/status").read_text().splitlines()
    rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    assert peak_rss_kb() >= rss_kb > 0
