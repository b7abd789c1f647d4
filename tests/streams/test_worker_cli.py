"""``contest-telemetry worker`` with settings that cannot work: exit 1, one line, no secrets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "CT_"))}
    return subprocess.run(
        [sys.executable, "-m", "contest_telemetry", "worker", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_incomplete_sasl_is_one_line_without_the_password() -> None:
    result = _worker({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": "hunter2-secret"})
    assert result.returncode == 1
    assert "hunter2-secret" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "SASL_SSL needs sasl_mechanism, sasl_username and sasl_password" in lines[0]


def test_a_bad_window_is_one_line_naming_the_variable() -> None:
    result = _worker({"CT_WORKER_WINDOW_S": "-5"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "CT_WORKER_WINDOW_S=" in lines[0], result.stderr
