"""The contract's duration rules, in one place.

- arming latency: ``max(0, startedAt - createdAt)``
- resolution latency: ``max(0, resolvedAt - startedAt)``
- on resolve a missing ``startedAt`` falls back to ``resolvedAt``, a missing ``createdAt`` to ``startedAt``
- a value that is not a number, is NaN or is negative is treated as missing (0 is valid)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

_INF = math.inf

__all__ = [
    "ResolvedDurations",
    "arming_duration_ms",
    "as_ms",
    "resolution_durations",
]


def as_ms(value: Any) -> float | int | None:
    """Return ``value`` when it is a usable time or duration, else ``None``.

    Booleans are rejected on purpose: hub code is JavaScript, where ``true`` is not a number.
    """
    kind = type(value)
    if kind is int:  # the common case first: this runs for every finished contest
        return value if value >= 0 else None
    if kind is float:
        return value if 0 <= value < _INF else None  # NaN fails every comparison
    if kind is bool or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None  # a float subclass
    return value if value >= 0 else None


def arming_duration_ms(created_at: Any, started_at: Any) -> float | int | None:
    """Arming latency at launch: ``max(0, startedAt - createdAt)``, or None if either is missing."""
    created, started = as_ms(created_at), as_ms(started_at)
    if created is None or started is None:
        return None
    return max(0, started - created)


class ResolvedDurations(NamedTuple):
    arming_ms: float | int | None
    resolution_ms: float | int | None


def resolution_durations(created_at: Any, started_at: Any, resolved_at: Any) -> ResolvedDurations:
    """Both durations on resolve, with the contract's fallbacks.

    >>> resolution_durations(100, 340, 920)
    ResolvedDurations(arming_ms=240, resolution_ms=580)
    """
    resolved = as_ms(resolved_at)
    started = as_ms(started_at)
    if started is None:
        started = resolved
    created = as_ms(created_at)
    if created is None:
        created = started
    arming = None if started is None or created is None else max(0, started - created)
    resolution = None if resolved is None or started is None else max(0, resolved - started)
    return ResolvedDurations(arming, resolution)
