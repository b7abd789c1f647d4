"""The worker's timing report: the one hook outside scripts (benchmarks/stream/worker.py) use to
time the worker from the outside.

With ``CT_WORKER_BENCH_EXPECT_EVENTS=N`` and ``CT_WORKER_BENCH_REPORT=PATH`` the worker writes, once
it has applied N events, one JSON object to PATH: ``events`` and ``seconds`` (from the first
applied event), the process's peak RSS and the CPU seconds over the same span. The file appears
whole (written to a temporary name, then renamed): a reader polling for it never sees half of it.
Without those settings nothing is measured.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from streams.settings import WorkerSettings

__all__ = ["TimingReport", "peak_rss_kb"]


class TimingReport:
    """Time from the first applied event to the expected count, written once to ``path``."""

    def __init__(self, expect: int, path: Path | None) -> None:
        self.expect = expect
        self.path = path
        self.events = 0
        self.first: float | None = None
        self.cpu = (0.0, 0.0)

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> TimingReport | None:
        """The report the settings ask for, None when they ask for none."""
        if not settings.bench_expect_events:
            return None
        return cls(settings.bench_expect_events, settings.bench_report)

    def add(self, n: int) -> None:
        """Count ``n`` more applied events; writes the report when they reach the expected count."""
        if self.first is None:
            self.first = time.perf_counter()
            self.cpu = (time.thread_time(), time.process_time())
        before = self.events
        self.events += n
        if before < self.expect <= self.events and self.path is not None:
            elapsed = time.perf_counter() - self.first
            report = {
                "events": self.events,
                "seconds": elapsed,
                "rss_peak_kb": peak_rss_kb(),
                # CPU seconds over the same span: the agent's thread, the whole process
                # (faust's consumer runs in a thread of its own).
                "main_thread_cpu_s": time.thread_time() - self.cpu[0],
                "process_cpu_s": time.process_time() - self.cpu[1],
            }
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_bytes(orjson.dumps(report))
            os.replace(tmp, self.path)


def peak_rss_kb() -> int:
    """VmHWM of this process (``ru_maxrss`` carries a parent's peak across fork and exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0
