from __future__ import annotations

import math
import random
import sys
from collections.abc import Iterator

import orjson
import pytest

from streams.exceptions import SketchError
from streams.sketch import DEFAULT_MAX_BUCKETS, MIN_VALUE, DDSketch
from tests.helpers.streams_reference import nearest_rank

QS = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0]


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_relative_error_against_exact_nearest_rank(sigma: float) -> None:
    rng = random.Random(int(sigma * 10))
    values = [rng.lognormvariate(math.log(500), sigma) for _ in range(20_000)]
    values += [0.0] * 50
    sk = DDSketch(0.01)
    sk.add_many(values)
    assert sk.count == len(values)
    for q in QS:
        want = nearest_rank(values, q)
        got = sk.quantile(q)
        assert want is not None and got is not None
        assert abs(got - want) <= 0.01 * want + 1e-12, (q, got, want)


def test_small_counts_and_empty() -> None:
    sk = DDSketch()
    assert sk.quantile(0.5) is None
    sk.add(240)
    assert sk.quantile(0.5) == 240  # clamped to the exact min/max
    sk.add(0)
    assert sk.quantile(0.0) == 0.0
    assert sk.quantile(1.0) == 240


def test_merge_equals_single_sketch_and_roundtrip() -> None:
    rng = random.Random(1)
    a, b, whole = DDSketch(), DDSketch(), DDSketch()
    for i in range(5000):
        v = rng.lognormvariate(5, 1.5) if i % 2 else rng.uniform(0, 3)
        (a if i % 3 else b).add(v)
        whole.add(v)
    merged = a.copy()
    merged.merge(b)
    assert merged.count == whole.count
    assert merged.quantiles([0.5, 0.95, 0.99]) == whole.quantiles([0.5, 0.95, 0.99])
    back = DDSketch.from_dict(merged.to_dict())
    assert back == merged
    assert back.to_dict() == whole.to_dict() | {"sum": back.to_dict()["sum"]}


def test_merge_rejects_other_alpha_and_bad_dicts() -> None:
    a, b = DDSketch(0.01), DDSketch(0.02)
    b.add(1)
    with pytest.raises(SketchError):
        a.merge(b)
    with pytest.raises(SketchError):
        DDSketch.from_dict({"alpha": 0.01})
    d = a.to_dict() | {"count": 3}
    with pytest.raises(SketchError):
        DDSketch.from_dict(d)


# -- bounded store: collapsing the lowest buckets ---------------------------------------------------


def _key(sk: DDSketch, v: float) -> int:
    """The bucket key the sketch gives ``v`` (its own float computation, so no boundary flips)."""
    return math.ceil(math.log(v) * sk._mult)


def _check_bounded(sk: DDSketch) -> None:
    assert len(sk.counts) <= sk.max_buckets
    assert sk.count == sk.zero + sum(sk.counts)
    assert 0 <= sk.collapsed <= sum(sk.counts)


def _check_oracle(sk: DDSketch, values: list[float], qs: list[float]) -> int:
    """Every quantile against the exact nearest rank: the alpha guarantee where the rank's value
    has its own bucket, [exact, upper bound of the lowest kept bucket] where it was collapsed.
    Returns how many of ``qs`` fell in collapsed values."""
    collapsed_ranks = 0
    upper = sk.gamma**sk.offset
    for q in qs:
        want, got = nearest_rank(values, q), sk.quantile(q)
        assert want is not None and got is not None
        if want >= MIN_VALUE and _key(sk, want) < sk.offset:
            collapsed_ranks += 1
            assert want <= got <= upper * (1 + 1e-12), (q, got, want, upper)
        else:
            assert abs(got - want) <= sk.alpha * want + 1e-12, (q, got, want)
    return collapsed_ranks


def test_default_max_buckets() -> None:
    sk = DDSketch()
    assert sk.max_buckets == DEFAULT_MAX_BUCKETS == 2048
    assert sk.collapsed == 0
    with pytest.raises(SketchError):
        DDSketch(0.01, 0)


@pytest.mark.parametrize(
    "values",
    [
        [1e-3, 1e300],
        [1e300],
        [1e300, 1e-3, 5.0, 1e300],
        [10.0**e for e in range(-3, 309)],
        [10.0**e for e in range(308, -4, -1)],
        [sys.float_info.max, 1e-3, sys.float_info.max, 0.0, 300.0],
    ],
    ids=["tiny-huge", "huge-only", "mixed", "decades-up", "decades-down", "float-max"],
)
@pytest.mark.parametrize("max_buckets", [DEFAULT_MAX_BUCKETS, 64, 1])
def test_extreme_values_never_raise_and_stay_bounded(values: list[float], max_buckets: int) -> None:
    one, many = DDSketch(0.01, max_buckets), DDSketch(0.01, max_buckets)
    for v in values:
        one.add(v)
        _check_bounded(one)
    many.add_many(values)
    _check_bounded(many)
    assert one == many
    for sk in (one, many):
        assert sk.count == len(values)
        assert sk.min == min(values) and sk.max == max(values)
        assert sk.quantile(1.0) == pytest.approx(max(values), rel=0.01)
        lo = sk.quantile(0.0)
        assert lo is not None and min(values) <= lo <= max(values)
        # Collapsed exactly counts the values outside their own bucket (a sketch built by add).
        assert sk.collapsed == sum(1 for v in values if v >= MIN_VALUE and _key(sk, v) < sk.offset)
        assert DDSketch.from_dict(sk.to_dict()) == sk


def test_huge_span_default_sketch_collapses_and_reports() -> None:
    sk = DDSketch()
    sk.add_many([1e-3, 1.0, 250.0, 1e300])
    assert len(sk.counts) == DEFAULT_MAX_BUCKETS
    assert sk.collapsed == 3  # 1e-3, 1 and 250 ms are ~34k buckets below 1e300
    assert sk.to_dict()["collapsed"] == 3
    assert sk.quantile(1.0) == pytest.approx(1e300, rel=0.01)
    assert sk.quantile(0.0) == sk.quantile(0.75) == pytest.approx(sk._value(sk.offset))


@pytest.mark.parametrize("order", ["random", "ascending", "descending"])
def test_small_max_buckets_oracle(order: str) -> None:
    rng = random.Random(11)
    # log-uniform over 8 decades: ~920 buckets of alpha 0.01, far more than 64.
    values = [math.exp(rng.uniform(math.log(1e-2), math.log(1e6))) for _ in range(20_000)]
    values += [0.0] * 30
    if order == "ascending":
        values.sort()
    elif order == "descending":
        values.sort(reverse=True)
    qs = [i / 200 for i in range(201)] + [0.999, 0.9999]
    one, many = DDSketch(0.01, 64), DDSketch(0.01, 64)
    for v in values:
        one.add(v)
    many.add_many(values)
    assert one == many
    sk = many
    _check_bounded(sk)
    assert len(sk.counts) == 64
    assert sk.count == len(values)
    assert sk.collapsed == sum(1 for v in values if v >= MIN_VALUE and _key(sk, v) < sk.offset)
    assert sk.collapsed > len(values) // 2
    collapsed_ranks = _check_oracle(sk, values, qs)
    assert 0 < collapsed_ranks < len(qs)
    # The high end keeps its accuracy.
    for q in (0.95, 0.99, 0.999, 1.0):
        want, got = nearest_rank(values, q), sk.quantile(q)
        assert want is not None and got is not None
        assert abs(got - want) <= 0.01 * want


def test_latency_like_values_do_not_collapse_with_default_max() -> None:
    rng = random.Random(5)
    values = [rng.lognormvariate(math.log(300), 2.5) for _ in range(20_000)] + [1e-3, 3_600_000.0]
    sk = DDSketch()
    sk.add_many(values)
    assert sk.collapsed == 0 and "collapsed" not in sk.to_dict()
    assert _check_oracle(sk, values, QS) == 0


@pytest.mark.parametrize("max_buckets", [DEFAULT_MAX_BUCKETS, 64])
def test_merge_far_apart_ranges_stays_bounded_and_equals_one_sketch(max_buckets: int) -> None:
    rng = random.Random(3)
    low = [rng.uniform(0.001, 2.0) for _ in range(3000)]
    mid = [rng.lognormvariate(math.log(300), 1.0) for _ in range(3000)]
    high = [rng.uniform(1e250, 1e260) for _ in range(3000)]
    parts = [low, high, mid, low[:100] + high[:100]]
    sketches = []
    for part in parts:
        s = DDSketch(0.01, max_buckets)
        s.add_many(part)
        _check_bounded(s)
        sketches.append(s)
    whole = DDSketch(0.01, max_buckets)
    for part in parts:
        whole.add_many(part)
    merged = DDSketch(0.01, max_buckets)
    for s in sketches:
        merged.merge(s)
        _check_bounded(merged)
    everything = [v for part in parts for v in part]
    assert merged.count == len(everything)
    assert merged.collapsed > 0
    # Every value ends in max(its key, offset), whatever the order: merging gives the same buckets
    # (and the same collapsed count) as adding everything to one sketch.
    assert merged.to_dict() | {"sum": 0} == whole.to_dict() | {"sum": 0}
    # Merging in the other direction too (self collapsed, other's values below its range).
    rev = sketches[1].copy()
    for s in (sketches[0], sketches[2], sketches[3]):
        rev.merge(s)
        _check_bounded(rev)
    assert rev.to_dict() | {"sum": 0} == whole.to_dict() | {"sum": 0}
    _check_oracle(merged, everything, QS)


def test_merge_keeps_self_max_buckets() -> None:
    wide = DDSketch()
    wide.add_many([10.0**e for e in range(-3, 6)])  # ~920 buckets, fits the default
    assert wide.collapsed == 0
    narrow = DDSketch(0.01, 64)
    narrow.add(5.0)
    narrow.merge(wide)
    _check_bounded(narrow)
    assert narrow.max_buckets == 64 and len(narrow.counts) == 64
    assert narrow.collapsed == 9  # all but 1e5 (and its own 64-bucket window) collapsed
    assert narrow.quantile(1.0) == pytest.approx(1e5, rel=0.01)
    # The other direction: the default sketch takes the narrow one's collapsed values as they are.
    wide.merge(narrow)
    _check_bounded(wide)
    assert wide.max_buckets == DEFAULT_MAX_BUCKETS
    assert wide.count == 19 and wide.collapsed == narrow.collapsed


def test_collapsed_roundtrip_copy_and_collapse_on_load() -> None:
    rng = random.Random(8)
    values = [math.exp(rng.uniform(math.log(1e-3), math.log(1e9))) for _ in range(5000)]
    big = DDSketch()
    big.add_many(values)
    assert big.collapsed == 0 and len(big.counts) > 64
    small = DDSketch(0.01, 64)
    small.add_many(values)
    d = small.to_dict()
    assert d["collapsed"] == small.collapsed > 0 and d["maxBuckets"] == 64
    back = DDSketch.from_dict(d)
    assert back == small and back.collapsed == small.collapsed and back.max_buckets == 64
    cp = small.copy()
    assert cp == small and cp.collapsed == small.collapsed and cp.max_buckets == 64
    # A sketch with more buckets than its maximum is collapsed on load.
    loaded = DDSketch.from_dict(big.to_dict() | {"maxBuckets": 64})
    _check_bounded(loaded)
    assert loaded == small
    assert loaded.to_dict() == d
    # Strict: counts add up, collapsed within them.
    with pytest.raises(SketchError):
        DDSketch.from_dict(d | {"collapsed": d["count"] + 1})
    with pytest.raises(SketchError):
        DDSketch.from_dict(d | {"collapsed": -1})
    with pytest.raises(SketchError):
        DDSketch.from_dict(d | {"count": d["count"] + 1})
    with pytest.raises(SketchError):
        DDSketch.from_dict(d | {"maxBuckets": 0})


def test_serialised_form_of_uncollapsed_default_sketch_is_unchanged() -> None:
    # Literals produced by the code before the bucket bound existed.
    sk = DDSketch()
    sk.add_many([0.0, 240.0, 241.5, 250.0, 262.0, 0.0004, 245.0])
    want = {
        "alpha": 0.01,
        "count": 7,
        "zero": 2,
        "min": 0.0,
        "max": 262.0,
        "sum": 1238.5004,
        "offset": 275,
        "counts": [2, 1, 1, 0, 1],
    }
    assert sk.to_dict() == want and list(sk.to_dict()) == list(want)
    assert orjson.dumps(sk.to_dict()) == (
        b'{"alpha":0.01,"count":7,"zero":2,"min":0.0,"max":262.0,"sum":1238.5004,'
        b'"offset":275,"counts":[2,1,1,0,1]}'
    )
    assert sk.quantiles([0, 0.5, 0.95, 1]) == [0.0, 242.2894312639631, 262.0, 262.0]
    other = DDSketch(0.02)
    for v in (5.0, 5.5, 6.25):
        other.add(v)
    assert other.to_dict() == {
        "alpha": 0.02,
        "count": 3,
        "zero": 0,
        "min": 5.0,
        "max": 6.25,
        "sum": 16.75,
        "offset": 41,
        "counts": [1, 0, 1, 0, 0, 1],
    }
    assert DDSketch().to_dict() == {
        "alpha": 0.01,
        "count": 0,
        "zero": 0,
        "min": None,
        "max": None,
        "sum": 0.0,
        "offset": 0,
        "counts": [],
    }
    assert DDSketch.from_dict(want) == sk


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_raise_and_leave_the_sketch_unchanged(bad: float) -> None:
    sk = DDSketch()
    sk.add_many([1.0, 300.0, 0.0])
    before = sk.to_dict()
    with pytest.raises(SketchError):
        sk.add(bad)
    assert sk.to_dict() == before
    with pytest.raises(SketchError):
        sk.add_many([2.0, bad, 3.0])
    assert sk.to_dict() == before | {"count": 4, "sum": 303.0, "counts": sk.to_dict()["counts"]}
    assert sk.count == sk.zero + sum(sk.counts) == 4
    assert DDSketch.from_dict(sk.to_dict()) == sk


def test_add_many_passes_on_errors_of_the_iterable() -> None:
    def values() -> Iterator[float]:
        yield 1.0
        raise ValueError("from the iterable")

    sk = DDSketch()
    with pytest.raises(ValueError, match="from the iterable"):
        sk.add_many(values())
    assert sk.count == 1


def test_negative_values_count_as_zero() -> None:
    sk = DDSketch()
    sk.add_many([-1e300, -5.0, 10.0])
    assert sk.zero == 2 and sk.min == -1e300
    assert sk.quantile(0.0) == 0.0 and sk.quantile(1.0) == 10.0


def test_overflowing_sum_survives_orjson_roundtrip() -> None:
    sk = DDSketch()
    sk.add_many([1e308, 1e308, 250.0])
    assert sk.sum == math.inf
    back = DDSketch.from_dict(orjson.loads(orjson.dumps(sk.to_dict())))
    assert back == sk and back.sum == math.inf
    # 250 ms is collapsed (1e308 is ~35k buckets higher): the lowest kept bucket, clamped.
    low, high = back.quantiles([0.0, 1.0])
    assert low is not None and 250.0 <= low <= back.gamma**back.offset
    assert high == pytest.approx(1e308, rel=0.01)


def test_after_a_collapse_lower_values_count_in_the_lowest_bucket() -> None:
    # A collapsed sketch narrower than its maximum (as a merge of a narrower sketch can leave):
    # lower values still go to the lowest kept bucket, so every value sits in max(key, offset).
    sk = DDSketch.from_dict(
        {
            "alpha": 0.01,
            "count": 6,
            "zero": 0,
            "min": 1.0,
            "max": 300.0,
            "sum": 310.0,
            "offset": 280,
            "counts": [5, 1],
            "collapsed": 3,
        }
    )
    sk.add(2.0)
    assert sk.offset == 280 and sk.counts == [6, 1] and sk.collapsed == 4
    assert sk.quantile(0.0) == pytest.approx(sk._value(280))
    sk.add(400.0)  # the high end still extends
    assert sk.offset == 280 and len(sk.counts) == _key(sk, 400.0) - 280 + 1
    _check_bounded(sk)
