"""A DDSketch: a mergeable quantile sketch with a relative-error guarantee.

Values ``x > 0`` fall in logarithmic buckets ``k = ceil(log_gamma(x))`` with
``gamma = (1 + alpha) / (1 - alpha)``; bucket ``k`` covers ``(gamma^(k-1), gamma^k]`` and is
represented by ``2 gamma^k / (gamma + 1)``, which is within ``alpha`` (relative) of every value in
the bucket. Values below :data:`MIN_VALUE` (0 ms and sub-microsecond durations) go to a zero
bucket represented by 0.

Quantile definition (the monitor's nearest rank, no interpolation): for ``0 <= q <= 1`` and
``n`` values, the value of rank ``r = min(n, max(1, ceil(q * n)))`` in sorted order. The sketch
returns the representative of the bucket holding rank ``r``, clamped to the exact ``[min, max]``,
so ``|estimate - exact| <= alpha * exact`` for every q (as long as nothing was collapsed, below).

Buckets are kept as one dense ``list`` of counts plus the index of its first bucket: latency
values span a few hundred contiguous buckets, and a dense list is ~10x smaller than a dict and as
fast to update.

Bounded size (Datadog sketches-py's ``CollapsingLowestDenseStore``): the list never holds more than
``max_buckets`` buckets (default :data:`DEFAULT_MAX_BUCKETS`, 2048, as sketches-py's
``LogCollapsingLowestDenseDDSketch``). When a new key (from :meth:`~DDSketch.add`,
:meth:`~DDSketch.add_many` or :meth:`~DDSketch.merge`) would make the span wider, the *lowest*
buckets are collapsed into the lowest bucket that is kept, and once a sketch has collapsed, a value
whose key is below its lowest kept bucket is counted in that bucket. Counts are preserved (``count
== zero + sum(counts)``), ``min``, ``max`` and ``sum`` stay exact, and :attr:`~DDSketch.collapsed`
counts the values counted in a bucket other than their own. Accuracy after a collapse:

* ranks whose value lies in a kept bucket keep the ``alpha`` guarantee: latency budgets care about
  p95/p99, and the high end is what is kept;
* ranks whose value was collapsed get the lowest kept bucket's representative, clamped to
  ``[min, max]``: at least the exact value and at most the upper bound ``gamma^offset`` of that
  bucket, with no relative-error guarantee.

With ``alpha = 0.01`` and 2048 buckets the kept span covers a factor of ``gamma^2048 ≈ 6e17``,
e.g. 1 µs to ~6e14 ms (19,000 years), so ordinary latencies never collapse; what does is a hub
sending absurd durations (``1e300``), which without the bound would grow one sketch to ~35k
buckets (~280 KB). Merging sketches of the same ``max_buckets`` gives the buckets and ``collapsed``
of one sketch fed all their values; a collapsed sketch of fewer buckets merged in keeps its
collapsed values where it put them, and ``collapsed`` is then a best-effort count.

Input: finite values only. ``add`` and ``add_many`` raise :class:`~streams.exceptions.SketchError`
for NaN, ``inf`` and ``-inf`` and leave the sketch unchanged by that value (``add_many`` keeps the
values before it and stops there). Negative finite values count in the zero bucket (``min`` and
``sum`` see them as they are). No finite value raises, and a value's cost in time and memory is
bounded by ``max_buckets``.

Serialised form (:meth:`~DDSketch.to_dict`): ``{"alpha", "count", "zero", "min", "max", "sum",
"offset", "counts"}``, plus ``"collapsed"`` when non-zero and ``"maxBuckets"`` when not the
default, so a sketch that never collapsed serialises exactly as before the bound existed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from streams.exceptions import SketchError

__all__ = ["DEFAULT_ALPHA", "DEFAULT_MAX_BUCKETS", "MIN_VALUE", "DDSketch"]

DEFAULT_ALPHA = 0.01
DEFAULT_MAX_BUCKETS = 2048
MIN_VALUE = 1e-3
"""Smallest value given its own bucket (1 microsecond, in ms); smaller values count as 0."""

_NEG_INF = -math.inf


def _not_finite(value: float) -> SketchError:
    return SketchError(f"cannot add {value!r} to a sketch: not a finite number")


class DDSketch:
    __slots__ = (
        "_mult",
        "alpha",
        "collapsed",
        "count",
        "counts",
        "gamma",
        "max",
        "max_buckets",
        "min",
        "offset",
        "sum",
        "zero",
    )

    def __init__(self, alpha: float = DEFAULT_ALPHA, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        if not 0 < alpha < 1:
            raise SketchError(f"alpha must be in (0, 1), got {alpha}")
        if max_buckets < 1:
            raise SketchError(f"max_buckets must be at least 1, got {max_buckets}")
        self.alpha = alpha
        self.gamma = (1 + alpha) / (1 - alpha)
        self._mult = 1.0 / math.log(self.gamma)
        self.max_buckets = max_buckets
        self.counts: list[int] = []
        self.offset = 0
        self.zero = 0
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.collapsed = 0
        """Values counted in a bucket other than their own (collapsed into the lowest bucket)."""

    # -- bucket range (the cold path) -----------------------------------------------------------
    def _extend(self, lo: int, hi: int) -> None:
        """Make the buckets cover keys ``lo..hi`` (``lo <= hi``) as far as ``max_buckets`` allows.

        The highest key is always kept; when the span would exceed ``max_buckets``, the lowest
        buckets are collapsed into the lowest one kept. Once something has been collapsed, the range
        never extends downwards again (lower keys are counted in the lowest bucket by the caller),
        so every value sits in ``max(its key, offset)``.
        """
        counts = self.counts
        limit = self.max_buckets
        if not counts:
            lo = max(lo, hi - limit + 1)
            self.offset = lo
            self.counts = [0] * (hi - lo + 1)
            return
        cur_lo = self.offset
        cur_hi = cur_lo + len(counts) - 1
        hi = max(hi, cur_hi)
        lo = max(min(lo, cur_lo), hi - limit + 1)
        if self.collapsed and lo < cur_lo:
            lo = cur_lo
        if lo > cur_lo:
            # Collapse buckets cur_lo..lo-1 into bucket lo. The values collapsed before all sit in
            # counts[0] (the range never extends downwards after a collapse): not counted twice.
            cut = lo - cur_lo
            moved = sum(counts[:cut])
            if moved:
                self.collapsed += moved - min(self.collapsed, counts[0])
            kept = counts[cut:]
            kept.extend([0] * (hi - lo + 1 - len(kept)))
            kept[0] += moved
            self.counts = kept
            self.offset = lo
            return
        if lo < cur_lo:
            self.counts = counts = [0] * (cur_lo - lo) + counts
            self.offset = lo
        if hi > cur_hi:
            counts.extend([0] * (hi - cur_hi))

    def _grow(self, key: int) -> int:
        """Make room for ``key`` (outside the buckets); the index of the bucket that counts it."""
        self._extend(key, key)
        i = key - self.offset
        if i < 0:
            self.collapsed += 1
            return 0
        return i

    # -- updates (the hot path) -----------------------------------------------------------------
    # In-range values run the same bytecode as before the bound existed: the key is computed before
    # any update (so NaN and inf leave the sketch unchanged), the try costs nothing until it raises
    # and the bucket range is only touched in _grow. Sub-microsecond values take a method call.
    def _add_low(self, value: float) -> None:
        """A value below :data:`MIN_VALUE`: the zero bucket (``-inf`` raises)."""
        if value == _NEG_INF:
            raise _not_finite(value)
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self.zero += 1

    def add(self, value: float) -> None:
        if value < MIN_VALUE:
            self._add_low(value)
            return
        try:
            key = math.ceil(math.log(value) * self._mult)  # NaN and inf raise here
            self.count += 1
            self.sum += value
            if value < self.min:
                self.min = value
            if value > self.max:
                self.max = value
            i = key - self.offset
            if i < 0 or i >= len(self.counts):
                i = self._grow(key)
            self.counts[i] += 1
        except (ValueError, OverflowError):
            if math.isfinite(value):
                raise
            raise _not_finite(value) from None

    def add_many(self, values: Iterable[float]) -> None:
        """Add every value; a non-finite one raises after the values before it were added."""
        log, ceil, mult = math.log, math.ceil, self._mult
        value = 0.0
        try:  # around the loop, not in it
            for value in values:
                if value < MIN_VALUE:
                    self._add_low(value)
                    continue
                key = ceil(log(value) * mult)  # NaN and inf raise here
                self.count += 1
                self.sum += value
                if value < self.min:
                    self.min = value
                if value > self.max:
                    self.max = value
                i = key - self.offset
                if i < 0 or i >= len(self.counts):
                    i = self._grow(key)
                self.counts[i] += 1
        except (ValueError, OverflowError):
            if math.isfinite(value):  # not ours (raised by the iterable)
                raise
            raise _not_finite(value) from None

    def merge(self, other: DDSketch) -> None:
        """Add ``other``'s values to this sketch (same alpha; this sketch's ``max_buckets``)."""
        if other.count == 0:
            return
        if other.gamma != self.gamma:
            raise SketchError(f"cannot merge sketches of alpha {self.alpha} and {other.alpha}")
        self.count += other.count
        self.sum += other.sum
        self.zero += other.zero
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        ocounts = other.counts
        first, end = 0, len(ocounts)
        while first < end and ocounts[first] == 0:
            first += 1
        while end > first and ocounts[end - 1] == 0:
            end -= 1
        if end > first:
            self._extend(other.offset + first, other.offset + end - 1)
            counts = self.counts
            base = other.offset - self.offset
            start = max(first, -base)  # other's buckets below ours collapse into counts[0]
            if start > first:
                moved = sum(ocounts[first:start])
                counts[0] += moved
                self.collapsed += moved - min(other.collapsed, ocounts[first])
            for i in range(start, end):
                c = ocounts[i]
                if c:
                    counts[base + i] += c
        self.collapsed += other.collapsed

    def copy(self) -> DDSketch:
        out = DDSketch(self.alpha, self.max_buckets)
        out.counts = list(self.counts)
        out.offset, out.zero, out.count, out.sum = self.offset, self.zero, self.count, self.sum
        out.min, out.max, out.collapsed = self.min, self.max, self.collapsed
        return out

    # -- queries -------------------------------------------------------------------------------
    def _value(self, key: int) -> float:
        try:
            return 2.0 * self.gamma**key / (self.gamma + 1.0)
        except OverflowError:  # the bucket of values near the largest float (clamped to max)
            return math.inf if key > 0 else 0.0

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
        out = {
            "alpha": self.alpha,
            "count": self.count,
            "zero": self.zero,
            "min": None if empty else self.min,
            "max": None if empty else self.max,
            "sum": self.sum,
            "offset": offset + lo if hi > lo else 0,
            "counts": counts[lo:hi],
        }
        if self.collapsed:
            out["collapsed"] = self.collapsed
        if self.max_buckets != DEFAULT_MAX_BUCKETS:
            out["maxBuckets"] = self.max_buckets
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DDSketch:
        """The sketch of :meth:`to_dict`'s form; strict (:class:`SketchError` when malformed).

        Buckets beyond ``maxBuckets`` are collapsed on load. A ``sum`` of ``None`` reads as
        ``inf``: a sum that overflowed (values near the largest float) is written as ``null`` by
        orjson.
        """
        try:
            out = cls(float(data["alpha"]), int(data.get("maxBuckets", DEFAULT_MAX_BUCKETS)))
            out.count = int(data["count"])
            out.zero = int(data["zero"])
            out.sum = math.inf if data["sum"] is None else float(data["sum"])
            offset = int(data["offset"])
            counts = [int(c) for c in data["counts"]]
            out.min = math.inf if data["min"] is None else float(data["min"])
            out.max = -math.inf if data["max"] is None else float(data["max"])
            out.collapsed = int(data.get("collapsed", 0))
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError) as exc:
            raise SketchError(f"malformed sketch: {exc!r}") from None
        total = sum(counts)
        if out.zero < 0 or (counts and min(counts) < 0) or out.zero + total != out.count:
            raise SketchError("malformed sketch: bucket counts do not add up to count")
        if not 0 <= out.collapsed <= total:
            raise SketchError("malformed sketch: collapsed is not within the bucket counts")
        lo, hi = 0, len(counts)
        while lo < hi and counts[lo] == 0:
            lo += 1
        while hi > lo and counts[hi - 1] == 0:
            hi -= 1
        if hi > lo:
            out.counts, out.offset = counts[lo:hi], offset + lo
            if hi - lo > out.max_buckets:  # collapse on load: keep the highest max_buckets
                out._extend(offset + hi - 1, offset + hi - 1)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DDSketch) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DDSketch(alpha={self.alpha}, count={self.count}, buckets={len(self.counts)})"
