"""Run ``python -m sinks.archive`` as a subprocess, for crash tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "archiver_command", "start_archiver", "verify_command"]

REPO = Path(__file__).resolve().parents[2]


def archiver_command(
    root: Path | str, bootstrap: str, events: str, records: str, group: str, *extra: str, chunk: int = 5
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sinks.archive",
        "run",
        "--dir",
        str(root),
        "--bootstrap",
        bootstrap,
        "--events-topic",
        events,
        "--records-topic",
        records,
        "--chunk-records",
        str(chunk),
        "--group",
        group,
        "--progress-interval",
        "5",
        *extra,
    ]


def start_archiver(command: list[str], *, crash_at: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CT_ARCHIVE_", "CT_TOPIC_"))}
    if crash_at:
        env["CT_ARCHIVE_CRASH_AT"] = crash_at
    return subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def verify_command(root: Path | str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sinks.archive", "verify", str(root), *extra]
