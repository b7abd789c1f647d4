"""docker-compose.yml's S3-compatible service and the archiver's wiring to it (no Docker here)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]


def _default(value: str) -> str:
    """``${NAME:-default}`` -> ``default``."""
    match = re.fullmatch(r"\$\{[A-Z_]+:-([^}]*)\}", value)
    assert match, value
    return match.group(1)


def test_archiver_reaches_the_s3_service_by_env_and_stays_local_by_default() -> None:
    s3 = SERVICES["s3"]
    archiver = SERVICES["archiver"]
    env = archiver["environment"]
    assert "--dir" not in archiver["command"]  # CT_ARCHIVE_DIR decides
    assert _default(env["CT_ARCHIVE_DIR"]) == "/archive"
    assert _default(env["AWS_ENDPOINT_URL"]) == "http://s3:80"
    assert s3["environment"]["S3PROXY_ENDPOINT"] == "http://0.0.0.0:80"
    # The same credentials on both sides, overridable together.
    assert s3["environment"]["S3PROXY_IDENTITY"] == env["AWS_ACCESS_KEY_ID"]
    assert s3["environment"]["S3PROXY_CREDENTIAL"] == env["AWS_SECRET_ACCESS_KEY"]
    # The bucket the README's s3://contest-archive/... names exists from the start.
    assert "/data/contest-archive" in " ".join(s3["entrypoint"])
    assert "s3" in archiver["depends_on"] and "ports" not in s3
