"""producers/ is the library hub services import: it ships its type hints (PEP 561 py.typed)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_producers_ship_py_typed_in_the_package_data() -> None:
    assert (ROOT / "producers" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["producers"]
    assert "py.typed" in package_data["contest_telemetry"]
