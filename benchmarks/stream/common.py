"""Helpers every part of the stream benchmark uses: progress lines, child processes, /proc."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

_T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[bench {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def proc_stat(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, user + system; peak RSS in kB) of a live process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return cpu, int(hwm.group(1)) if hwm else 0


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as resp:  # our own exporter, on 127.0.0.1
        return str(resp.read().decode())


def round_or_none(v: Any, digits: int) -> float | None:
    return round(float(v), digits) if isinstance(v, int | float) else None
