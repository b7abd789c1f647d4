"""A DDSketch: a mergeable quantile sketch with a relative-error guarantee.

Values ``x > 0`` fall in logarithmic buckets ``k = ceil(log_gamma(x))`` with
``gamma = (1 + alpha) / (1 - alpha)``; bucket ``k`` covers ``(gamma^(k-1), gamma^k]`` and is
represented by ``2 gamma^k / (gamma + 1)``, which is within ``alpha`` (relative) of every value in
the bucket. Values below :data:`MIN_VALUE` (0 ms and sub-microsecond durations) go to a zero
bucket represented by 0.

Quantile definition (the monitor's nearest rank, no interpolation): for ``0 <= q <= 1`` and
``n`` values, the value of rank ``r = min(n, max(1, ceil(q * n)))`` in sorted order. The sketch
returns the representative of the bucket holding rank ``r``, clamped to the exact ``[min, max]``,
so ``|estimate - exact| <= alpha * exact`` for every q.

Buckets are kept as one dense ``list`` of counts plus the index of its first bucket: latency
values span a few hundred contiguous buckets, and a dense list is ~10x smaller than a dict and as
fast to update. Serialised form (:meth:`to_dict`): ``{"alpha", "count", "zero", "min", "max",
"sum", "offset", "counts"}``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from streams.exceptions import SketchError

__all__ = ["DEFAULT_ALPHA", "MIN_VALUE", "DDSketch"]

DEFAULT_ALPHA = 0.01
MIN_VALUE = 1e-3
"""Smallest value given its own bucket (1 microsecond, in ms); smaller values count as 0."""
_MAX_SPAN = 1 << 16  # guard against absurd spans (1e-3 .. 1e300 would still fit in ~35k buckets)


class DDSketch:
    __slots__ = ("_mult", "alpha", "count", "counts", "gamma", "max", "min", "offset", "sum", "zero")

    def __init__(self, alpha: float = DEFAULT_ALPHA) -> None:
        if not 0 < alpha < 1:
            raise SketchError(f"alpha must be in (0, 1), got {alpha}")
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self._mult = 1.0 / math.log(self.gamma)
        self.counts: list[int] = []
        self.offset = 0
        self.zero = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf

    # -- updates -------------------------------------------------------------------------------
    def _grow(self, key: int) -> None:
        counts = self.counts
        if not counts:
            self.offset = key
            self.counts = [0]
            return
        if key < self.offset:
            if self.offset + len(counts) - key > _MAX_SPAN:
                raise SketchError("sketch span too large")
            self.counts = [0] * (self.offset - key) + counts
            self.offset = key
        else:
            if key - self.offset + 1 > _MAX_SPAN:
                raise SketchError("sketch span too large")
            counts.extend([0] * (key - self.offset + 1 - len(counts)))

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value < MIN_VALUE:
            self.zero += 1
            return
        key = math.ceil(math.log(value) * self._mult)
        i = key - self.offset
        if i < 0 or i >= len(self.counts):
            self._grow(key)
            i = key - self.offset
        self.counts[i] += 1

    def add_many(self, values: Iterable[float]) -> None:
        log, ceil, mult = math.log, math.ceil, self._mult
        for value in values:
            self.count += 1
            self.sum += value
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value
            if value < MIN_VALUE:
                self.zero += 1
                continue
            key = ceil(log(value) * mult)
            i = key - self.offset
            if i < 0 or i >= len(self.counts):
                self._grow(key)
                i = key - self.offset
            self.counts[i] += 1

    def merge(self, other: DDSketch) -> None:
        """Add ``other``'s values to this sketch (same alpha)."""
        if other.count == 0:
            return
        if other.gamma != self.gamma:
            raise SketchError(f"cannot merge sketches of alpha {self.alpha} and {other.alpha}")
        self.count += other.count
        self.sum += other.sum
        self.zero += other.zero
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.counts:
            self._grow(other.offset)
            self._grow(other.offset + len(other.counts) - 1)
            base = other.offset - self.offset
            counts = self.counts
            for i, c in enumerate(other.counts):
                if c:
                    counts[base + i] += c

    def copy(self) -> DDSketch:
        out = DDSketch(self.alpha)
        out.counts = list(self.counts)
        out.offset, out.zero, out.count, out.sum = self.offset, self.zero, self.count, self.sum
        out.min, out.max = self.min, self.max
        return out

    # -- queries -------------------------------------------------------------------------------
    def _value(self, key: int) -> float:
        return 2.0 * self.gamma**key / (self.gamma + 1.0)

    def quantiles(self, qs: Iterable[float]) -> list[float | None]:
        """Several quantiles in one pass (see the module docstring for the definition)."""
        qs = list(qs)
        if self.count == 0:
            return [None for _ in qs]
        n = self.count
        ranks = [min(n, max(1, math.ceil(q * n - 1e-9))) for q in qs]
        order = sorted(range(len(qs)), key=lambda j: ranks[j])
        out: list[float | None] = [None] * len(qs)
        cum = self.zero
        i, pos = 0, 0
        counts = self.counts
        for j in order:
            rank = ranks[j]
            if rank <= self.zero:
                out[j] = max(0.0, self.min) if self.min < MIN_VALUE else 0.0
                continue
            while cum < rank and pos < len(counts):
                cum += counts[pos]
                pos += 1
            i = pos - 1
            value = self._value(self.offset + i)
            out[j] = min(max(value, self.min), self.max)
        return out

    def quantile(self, q: float) -> float | None:
        return self.quantiles([q])[0]

    def __len__(self) -> int:
        return self.count

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        # Trim zero counts at both ends (a merge can leave them) so the form is canonical.
        counts, offset = self.counts, self.offset
        lo, hi = 0, len(counts)
        while lo < hi and counts[lo] == 0:
            lo += 1
        while hi > lo and counts[hi - 1] == 0:
            hi -= 1
        empty = self.count == 0
        return {
            "alpha": self.alpha,
            "count": self.count,
            "zero": self.zero,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
            "sum": self.sum,
            "offset": offset + lo if hi > lo else 0,
            "counts": counts[lo:hi],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDSketch:
        try:
            out = cls(float(data["alpha"]))
            out.count = int(data["count"])
            out.zero = int(data["zero"])
            out.sum = float(data["sum"])
            out.offset = int(data["offset"])
            out.counts = [int(c) for c in data["counts"]]
            out.min = math.inf if data["min"] is None else float(data["min"])
            out.max = -math.inf if data["max"] is None else float(data["max"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SketchError(f"malformed sketch: {exc!r}") from None
        if out.zero + sum(out.counts) != out.count:
            raise SketchError("malformed sketch: bucket counts do not add up to count")
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DDSketch) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DDSketch(alpha={self.alpha}, count={self.count}, buckets={len(self.counts)})"
