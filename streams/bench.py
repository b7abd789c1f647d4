"""Placeholder; replaced below."""

from __future__ import annotations

from typing import Any


def add_parser(subparsers: Any) -> Any:
    return None
