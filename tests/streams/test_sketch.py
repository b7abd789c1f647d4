from __future__ import annotations

import math
import random

import pytest

from streams.exceptions import SketchError
from streams.sketch import DDSketch
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
